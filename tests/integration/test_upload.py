"""A CSV upload through the real admin over HTTP, processed by a real worker, whose accepted
rows' postbacks reach a real receiver (PostgreSQL, Redis, Celery worker process)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.utils import timezone

from postbacks.models import Delivery
from tests import factories
from tests.conftest import campaign_with_rule, wait_until
from tracker import tasks, uploads
from tracker.models import Click, Conversion, ConversionUpload, InboundRequest

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "manual_upload.csv"


def admin_session(base_url: str) -> requests.Session:
    """A signed-in admin session, as a browser gets one (login form with its CSRF token)."""
    factories.UserFactory(username="boss", is_staff=True, is_superuser=True)
    session = requests.Session()
    session.get(f"{base_url}/admin/login/", timeout=10).raise_for_status()
    answer = session.post(
        f"{base_url}/admin/login/",
        data={
            "username": "boss",
            "password": "pw-123456",  # UserFactory's
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, answer.text
    return session


def test_upload_through_the_admin_is_processed_by_the_worker(worker, receiver, live_server):
    campaign, rule = campaign_with_rule(
        receiver.url + "/pb?cid={externalid}&tx={txid}&s={status}&p={payout}"
    )
    click = factories.click(campaign, external_id="tbl-42")
    Click.objects.filter(pk=click.pk).update(created_at=datetime(2025, 10, 1, tzinfo=UTC))
    data = FIXTURE.read_bytes().replace(b"CLICK_ID_FROM_DEMO", str(click.pk).encode())

    session = admin_session(live_server.url)
    form = session.get(f"{live_server.url}/admin/tracker/conversionupload/add/", timeout=10)
    assert "Upload conversions" in form.text
    page = session.post(
        f"{live_server.url}/admin/tracker/conversionupload/add/",
        data={"csrfmiddlewaretoken": session.cookies["csrftoken"]},
        files={"file": ("manual_upload.csv", data, "text/csv")},
        timeout=30,
    )
    assert page.status_code == 200
    upload = ConversionUpload.objects.get()
    assert page.url == f"{live_server.url}/admin/tracker/conversionupload/{upload.pk}/change/"
    assert "6 rows queued for import" in page.text

    def finished():
        upload.refresh_from_db()
        return upload.state in ("done", "failed")

    assert wait_until(finished, timeout=60), upload.state
    assert (upload.state, upload.processed_rows, upload.total_rows) == ("done", 6, 6)
    assert (upload.accepted, upload.duplicates, upload.status_changes, upload.errors) == (
        2,
        0,
        1,
        3,
    )
    rows = InboundRequest.objects.filter(upload=upload).order_by("row_number")
    assert list(rows.values_list("row_number", "outcome")) == [
        (1, "unknown_click"),
        (2, "accepted"),
        (3, "accepted"),
        (4, "invalid"),
        (5, "invalid"),
        (6, "status_changed"),
    ]

    # The accepted rows and the refund's status change reach the traffic source.
    received = receiver.wait_for(3)
    assert sorted(r.path for r in received) == sorted(
        [
            "/pb?cid=tbl-42&tx=ord-7781&s=approved&p=12.5",
            "/pb?cid=tbl-42&tx=ord-7781-up1&s=approved&p=3",
            "/pb?cid=tbl-42&tx=ord-7781&s=refunded&p=12.5",
        ]
    )
    assert wait_until(
        lambda: (
            set(Delivery.objects.filter(rule=rule).values_list("status", flat=True))
            == {"delivered"}
        )
    )
    assert Conversion.objects.get(txid="ord-7781").status == "refunded"

    # The admin shows the report and the counters.
    report = session.get(page.url, timeout=10).text
    assert "Status changed approved → refunded" in report
    assert re.search(r'<progress id="upload-progress" value="6" max="6">', report)
    progress = session.get(
        f"{live_server.url}/admin/tracker/conversionupload/{upload.pk}/progress.json", timeout=10
    ).json()
    assert (progress["state"], progress["processed_rows"]) == ("done", 6)


def test_a_stalled_upload_is_picked_up_again_by_the_worker(worker, receiver):
    """An upload whose task was lost (broker down at upload time): the resume task, sent
    through the real broker as the beat sends it, has the worker import it."""
    campaign, _rule = campaign_with_rule(receiver.url + "/pb?cid={externalid}&tx={txid}")
    click = factories.click(campaign, external_id="tbl-lost")
    # The upload time is the rows' conversion time: the click came before it.
    Click.objects.filter(pk=click.pk).update(created_at=datetime(2025, 10, 1, tzinfo=UTC))
    upload = uploads.upload_create(
        "lost.csv", f"{click.pk},2,LOST-1,sale\n".encode(), enqueue=False
    )
    ConversionUpload.objects.filter(pk=upload.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.TRACKER_UPLOAD_STALLED_SECONDS + 1)
    )
    tasks.uploads_resume_task.delay()

    def finished():
        upload.refresh_from_db()
        return upload.state == "done"

    assert wait_until(finished, timeout=60), upload.state
    assert upload.accepted == 1
    assert receiver.wait_for(1)[0].path == "/pb?cid=tbl-lost&tx=LOST-1"
    assert wait_until(
        lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).count() == 1
    )
