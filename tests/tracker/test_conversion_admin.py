"""Admin pages for conversions: CSV upload with progress and results, manual add and
correction, the conversion list's filters, and the inbound log ("Conversions — In")."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns.models import AffiliateNetwork
from postbacks.models import Delivery
from tests import factories
from tracker import uploads
from tracker.models import Click, Conversion, ConversionUpload, InboundRequest

pytestmark = pytest.mark.django_db
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "manual_upload.csv"
URL = "https://ts.example/pb?cid={externalid}&tx={txid}&s={status}"
UPLOADS = "/admin/tracker/conversionupload/"
CONVERSIONS = "/admin/tracker/conversion/"


@pytest.fixture
def click():
    created = factories.click(external_id="ext-adm")
    Click.objects.filter(pk=created.pk).update(created_at=datetime(2025, 10, 1, tzinfo=UTC))
    created.refresh_from_db()
    return created


def fixture_file(click, name="manual_upload.csv") -> SimpleUploadedFile:
    data = FIXTURE.read_bytes().replace(b"CLICK_ID_FROM_DEMO", str(click.pk).encode())
    return SimpleUploadedFile(name, data, content_type="text/csv")


def text(response) -> str:
    return response.content.decode()


# --- Upload ------------------------------------------------------------------------------------


def test_conversion_list_links_to_the_upload_page(admin_client):
    page = text(admin_client.get(CONVERSIONS))
    assert f'href="{UPLOADS}add/"' in page and "Upload conversions" in page
    assert f'href="{CONVERSIONS}add/"' in page
    form = text(admin_client.get(f"{UPLOADS}add/"))
    assert 'enctype="multipart/form-data"' in form
    assert "click_id,payout,transaction_id,conversion_type,timestamp" in form


def test_upload_queues_the_file_then_shows_progress_and_results(
    admin_client, admin_user, click, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"{UPLOADS}add/", {"file": fixture_file(click)})
    upload = ConversionUpload.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{UPLOADS}{upload.pk}/change/"
    assert len(callbacks) == 1  # the processing task, sent on commit
    assert (upload.state, upload.total_rows, upload.uploaded_by) == ("queued", 6, admin_user)
    assert LogEntry.objects.filter(object_id=str(upload.pk), action_flag=ADDITION).exists()

    queued = text(admin_client.get(response["Location"]))
    assert '<progress id="upload-progress" value="0" max="6">' in queued
    assert f"{UPLOADS}{upload.pk}/progress.json" in queued  # polled while queued
    assert '<meta http-equiv="refresh" content="3">' in queued  # without JavaScript
    assert "No row done yet." in queued
    progress = admin_client.get(f"{UPLOADS}{upload.pk}/progress.json").json()
    assert progress == {
        "state": "queued", "state_label": "Queued", "total_rows": 6, "processed_rows": 0,
        "accepted": 0, "duplicates": 0, "status_changes": 0, "errors": 0, "error": "",
    }  # fmt: skip

    uploads.upload_process(upload)
    done = text(admin_client.get(response["Location"]))
    assert '<progress id="upload-progress" value="6" max="6">' in done
    assert "progress.json" not in done and "http-equiv" not in done
    lead = Conversion.objects.get(txid="ord-7781")
    for expected in (
        "Unknown click ID",
        "unknown_click_id",
        "invalid_payout",
        "Status changed approved → refunded",
        f'href="/admin/tracker/conversion/{lead.pk}/change/">#{lead.pk}</a>',
        f"{click.pk},-12.50,ord-7781,refund,",
    ):
        assert expected in done, expected
    assert admin_client.get(f"{UPLOADS}{upload.pk}/progress.json").json()["state"] == "done"
    trace = text(admin_client.get(f"{CONVERSIONS}{lead.pk}/change/"))
    assert f"upload #{upload.pk}</a>, row 2" in trace and f"upload #{upload.pk}</a>, row 6" in trace

    listing = text(admin_client.get(UPLOADS))
    assert "manual_upload.csv" in listing and "6 / 6" in listing


def test_results_download_as_csv(admin_client, click):
    upload = uploads.upload_create("f.csv", fixture_file(click).read(), enqueue=False)
    uploads.upload_process(upload)
    response = admin_client.get(f"{UPLOADS}{upload.pk}/results.csv")
    assert (
        response["Content-Disposition"] == f'attachment; filename="upload-{upload.pk}-results.csv"'
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["row", "line", "outcome", "error code", "detail", "conversion"]
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == [
        ("1", "Unknown click ID", "unknown_click_id"),
        ("2", "Accepted", ""),
        ("3", "Accepted", ""),
        ("4", "Invalid", "invalid_click_id"),
        ("5", "Invalid", "invalid_payout"),
        ("6", "Status changed", ""),
    ]
    assert rows[6][1] == f"{click.pk},-12.50,ord-7781,refund,"
    assert rows[6][4].startswith("Status changed approved → refunded")
    assert rows[6][5] == str(Conversion.objects.get(txid="ord-7781").pk)


def test_results_are_paginated(admin_client, click, monkeypatch):
    from tracker.admin import conversions

    monkeypatch.setattr(conversions, "REPORT_PAGE_ROWS", 2)
    upload = uploads.upload_create("f.csv", fixture_file(click).read(), enqueue=False)
    uploads.upload_process(upload)
    first = text(admin_client.get(f"{UPLOADS}{upload.pk}/change/"))
    last = text(admin_client.get(f"{UPLOADS}{upload.pk}/change/?p=3"))
    assert "unknown_click_id" in first and "invalid_payout" not in first
    assert "invalid_payout" in last and 'href="?p=2"' in last and "6 rows" in last


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"caf\xe9,1,t,sale\n", "byte 0xE9 on line 1"),
        (b"", "The submitted file is empty."),
        (b"\n\n", "no conversion rows"),
        (b"click_id,euros\nx,1\n", "unknown column &#x27;euros&#x27;"),
    ],
)
def test_a_refused_file_is_explained_and_nothing_is_stored(admin_client, data, message):
    response = admin_client.post(f"{UPLOADS}add/", {"file": SimpleUploadedFile("x.csv", data)})
    assert response.status_code == 200
    page = text(response)
    assert message in page and "nothing was imported" in page.lower()
    assert not ConversionUpload.objects.exists()


def test_an_oversize_file_is_refused_with_the_limit(admin_client, settings):
    settings.TRACKER_UPLOAD_MAX_BYTES = 10
    response = admin_client.post(f"{UPLOADS}add/", {"file": SimpleUploadedFile("x.csv", b"a" * 11)})
    assert "The file is too large: 11 bytes" in text(response)
    assert not ConversionUpload.objects.exists()


def test_a_failed_upload_shows_why_and_can_be_processed_again(
    admin_client, click, django_capture_on_commit_callbacks
):
    upload = uploads.upload_create("f.csv", fixture_file(click).read(), enqueue=False)
    upload = uploads.upload_process(upload, on_row=lambda row, log: 1 / (row.number - 3))
    assert upload.state == "failed"
    page = text(admin_client.get(f"{UPLOADS}{upload.pk}/change/"))
    assert "Stopped at row 3: ZeroDivisionError" in page
    assert "3 of 6 rows were done" in page and "Process again" in page
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(f"{UPLOADS}{upload.pk}/process/")
    assert response.status_code == 302 and len(callbacks) == 1
    upload.refresh_from_db()
    assert upload.state == "queued"
    assert uploads.upload_process(upload).state == "done"
    assert InboundRequest.objects.filter(upload=upload).count() == 6
    assert admin_client.get(f"{UPLOADS}{upload.pk}/process/").status_code == 403


def test_uploading_needs_both_add_permissions(client, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    for codename in ("view_conversion", "view_conversionupload", "add_conversionupload"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    assert client.get(f"{UPLOADS}add/").status_code == 403
    assert "Upload conversions" not in text(client.get(CONVERSIONS))
    user.user_permissions.add(Permission.objects.get(codename="add_conversion"))
    user = django_user_model.objects.get(pk=user.pk)  # permissions are cached per instance
    client.force_login(user)
    assert client.get(f"{UPLOADS}add/").status_code == 200
    assert "Upload conversions" in text(client.get(CONVERSIONS))


def test_uploads_are_never_edited_or_deleted_by_hand(admin_client, click):
    upload = uploads.upload_create("f.csv", fixture_file(click).read(), enqueue=False)
    assert admin_client.get(f"{UPLOADS}{upload.pk}/delete/").status_code == 403
    assert b'name="_save"' not in admin_client.get(f"{UPLOADS}{upload.pk}/change/").content


# --- Manual add ---------------------------------------------------------------------------------


def add(admin_client, click, **fields):
    data = {"click_id": str(click.pk), "status": "approved", **fields}
    return admin_client.post(f"{CONVERSIONS}add/", data)


def test_add_conversion_goes_through_ingest_and_fires(admin_client, admin_user, click):
    rule = factories.rule(URL)
    assert "Test conversion" in text(admin_client.get(f"{CONVERSIONS}add/"))
    response = add(
        admin_client, click, payout="7.5", currency="eur", txid="M-1", conversion_type="sale",
        timestamp="2025-10-05T10:00:00Z",
    )  # fmt: skip
    conversion = Conversion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{CONVERSIONS}{conversion.pk}/change/"
    assert (conversion.method, conversion.payout, conversion.currency) == (
        "admin",
        Decimal("7.5"),
        "EUR",
    )
    assert conversion.converted_at == datetime(2025, 10, 5, 10, tzinfo=UTC)
    assert Delivery.objects.filter(rule=rule, conversion=conversion).count() == 1
    log = InboundRequest.objects.get()
    assert (log.channel, log.outcome, log.conversion) == ("admin", "accepted", conversion)
    assert "txid=M-1" in log.query
    entry = LogEntry.objects.get(object_id=str(conversion.pk))
    assert (entry.action_flag, entry.user) == (ADDITION, admin_user)


def test_add_a_test_conversion(admin_client, click):
    factories.rule(URL)
    add(admin_client, click, txid="TEST-1", is_test="on")
    conversion = Conversion.objects.get()
    assert conversion.is_test
    assert Delivery.objects.get(conversion=conversion).is_test


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"click_id": "00000000-0000-4000-8000-000000000000"}, "click_id", "No click with ID"),
        ({"click_id": "nope"}, "click_id", "is not a click ID"),
        ({"payout": "abc"}, "payout", "Enter a number."),
        ({"currency": "XXQ"}, "currency", "not an ISO 4217"),
        ({"timestamp": "2020-01-01T00:00:00Z"}, "timestamp", "before the click"),
        ({"timestamp": "soon"}, "timestamp", "is not a time"),
    ],
)
def test_add_refusals_show_on_their_field(admin_client, click, fields, field, message):
    response = add(admin_client, click, **fields)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field] and message in errors[field][0], errors
    assert not Conversion.objects.exists()
    assert "Please correct the error below." in text(response)


def test_add_a_repeat_is_a_duplicate_or_a_status_change(admin_client, click):
    add(admin_client, click, txid="R-1", status="pending")
    conversion = Conversion.objects.get()
    again = add(admin_client, click, txid="R-1", status="pending")
    assert "Already recorded: conversion" in again.context["adminform"].form.errors["txid"][0]
    changed = add(admin_client, click, txid="R-1", status="approved")
    assert changed["Location"] == f"{CONVERSIONS}{conversion.pk}/change/"
    conversion.refresh_from_db()
    assert conversion.status == "approved"
    assert list(InboundRequest.objects.order_by("id").values_list("outcome", flat=True)) == [
        "accepted",
        "duplicate",
        "status_changed",
    ]


# --- Correction ---------------------------------------------------------------------------------


def edit_data(conversion: Conversion, **fields) -> dict:
    return {
        "payout": str(conversion.payout), "currency": conversion.currency,
        "txid": conversion.txid, "conversion_type": conversion.conversion_type,
        "params": "{}", "_save": "Save", **fields,
    }  # fmt: skip


def test_edit_corrects_values_without_firing_and_keeps_history(admin_client, click):
    rule = factories.rule(URL)
    add(admin_client, click, txid="E-1", payout="1", conversion_type="lead")
    conversion = Conversion.objects.get()
    page = text(admin_client.get(f"{CONVERSIONS}{conversion.pk}/change/"))
    assert "no rule fires again" in page and "visit time" in page.lower()
    assert "Trace" in page and "Inbound requests and dedup decisions" in page

    data = edit_data(
        conversion, payout="9.99", txid="E-1b", conversion_type="sale", params='{"param1": "x"}'
    )
    response = admin_client.post(f"{CONVERSIONS}{conversion.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    conversion.refresh_from_db()
    assert (conversion.payout, conversion.txid, conversion.conversion_type) == (
        Decimal("9.99"),
        "E-1b",
        "sale",
    )
    assert conversion.dedup_key == "t:E-1b" and conversion.params == {"param1": "x"}
    assert conversion.display_payout == Decimal("9.99")
    assert Delivery.objects.filter(rule=rule).count() == 1  # nothing fired again
    entry = LogEntry.objects.get(object_id=str(conversion.pk), action_flag=CHANGE)
    assert "Payout" in entry.get_change_message() and "Transaction ID" in entry.get_change_message()
    # A later postback with the corrected txid is a repeat of this conversion.
    answer = admin_client.get("/cv", {"click_id": str(click.pk), "txid": "E-1b"}).json()
    assert answer == {"status": "duplicate", "conversion_id": conversion.pk}


def test_edit_refuses_the_txid_of_another_conversion_and_bad_values(admin_client, click):
    add(admin_client, click, txid="A")
    add(admin_client, click, txid="B")
    first = Conversion.objects.get(txid="A")
    url = f"{CONVERSIONS}{first.pk}/change/"
    taken = admin_client.post(url, edit_data(first, txid="B"))
    assert (
        "of this click already has this transaction ID"
        in taken.context["adminform"].form.errors["txid"][0]
    )
    bad = admin_client.post(url, edit_data(first, currency="ZZZ", params='{"x": 1}'))
    assert set(bad.context["adminform"].form.errors) == {"currency", "params"}
    first.refresh_from_db()
    assert first.txid == "A"


def test_conversions_are_never_deleted(admin_client, click):
    add(admin_client, click, txid="D")
    conversion = Conversion.objects.get()
    assert admin_client.get(f"{CONVERSIONS}{conversion.pk}/delete/").status_code == 403


# --- Conversion list ----------------------------------------------------------------------------


def test_conversion_list_filters_and_columns(admin_client, click):
    add(admin_client, click, txid="by-admin", is_test="on")
    admin_client.get("/cv", {"click_id": str(click.pk), "txid": "by-s2s", "status": "pending"})
    page = text(admin_client.get(CONVERSIONS))
    assert "Conversion time" in page and "Received" in page and "Method" in page
    assert "?method=admin" in page and "?method=s2s" in page
    assert "?method=pixel" not in page and "?method=upload" not in page  # none of those

    def shown(query: str) -> set[str]:
        page = text(admin_client.get(CONVERSIONS + query))
        return {txid for txid in ("by-admin", "by-s2s") if txid in page}

    assert shown("?method=admin") == {"by-admin"}
    assert shown("?method=s2s") == {"by-s2s"}
    assert shown("?is_test__exact=1") == {"by-admin"}
    assert shown("?is_test__exact=0") == {"by-s2s"}
    assert shown("?status__exact=pending") == {"by-s2s"}
    assert shown("?ct=lead") == set()


# --- Inbound log --------------------------------------------------------------------------------


@pytest.fixture
def inbound_log(admin_client, click):
    network = AffiliateNetwork.objects.get(name="Network")
    admin_client.get("/cv", {"click_id": str(click.pk), "txid": "IN-1"}, HTTP_USER_AGENT="NetBot")
    admin_client.get("/cv", {"click_id": str(click.pk), "payout": "x"})
    upload = uploads.upload_create("f.csv", fixture_file(click).read(), enqueue=False)
    uploads.upload_process(upload)
    return network, upload


def test_inbound_log_list_columns_and_title(admin_client, inbound_log, click):
    page = text(admin_client.get("/admin/tracker/inboundrequest/"))
    assert "Conversions — In" in page
    for heading in ("Method", "Network", "Click ID", "Outcome", "Error code", "Visit time",
                    "Conversion time", "Conversion"):  # fmt: skip
        assert heading in page, heading
    assert "more than" not in page and "8 Conversions — In" in page  # no COUNT: known here


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("?outcome__exact=invalid", 3),
        ("?channel=upload", 6),
        ("?channel=s2s", 2),
        ("?error=invalid_payout", 2),
        ("?error=unknown_click_id", 1),
        ("?q=IN-1", 1),
        ("?q=ord-7781", 2),
        ('?q="ord-7781-up1"', 1),
        ("?created_at__range__gte_0=2000-01-01&created_at__range__gte_1=00:00:00", 8),
        ("?created_at__range__lte_0=2000-01-01&created_at__range__lte_1=00:00:00", 0),
    ],
)
def test_inbound_log_filters_and_search(admin_client, inbound_log, query, count):
    response = admin_client.get("/admin/tracker/inboundrequest/" + query)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == count


def test_inbound_log_filter_choices_are_the_ones_present(admin_client, inbound_log, click):
    network, _ = inbound_log
    page = text(admin_client.get("/admin/tracker/inboundrequest/"))
    assert "?channel=upload" in page and "?channel=pixel" not in page
    assert f"?network={network.pk}" in page
    assert "?error=invalid_payout" in page and "?error=forbidden_ip" not in page
    assert f"?network={network.pk}" in page
    filtered = admin_client.get(f"/admin/tracker/inboundrequest/?network={network.pk}")
    assert len(filtered.context["cl"].result_list) == 4  # the click's network, once known


def test_inbound_log_detail_shows_the_request(admin_client, inbound_log, click):
    _, upload = inbound_log
    s2s = InboundRequest.objects.get(channel="s2s", outcome="accepted")
    page = text(admin_client.get(f"/admin/tracker/inboundrequest/{s2s.pk}/change/"))
    for expected in (
        "txid=IN-1",
        "NetBot",
        "127.0.0.1",
        f"/admin/tracker/conversion/{s2s.conversion_id}/",
    ):
        assert expected in page, expected
    row = InboundRequest.objects.get(upload=upload, row_number=6)
    page = text(admin_client.get(f"/admin/tracker/inboundrequest/{row.pk}/change/"))
    assert f"upload #{upload.pk}</a>, row 6" in page
    assert (
        b'name="_save"'
        not in admin_client.get(f"/admin/tracker/inboundrequest/{row.pk}/change/").content
    )
