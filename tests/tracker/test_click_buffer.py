"""The click buffer (tracker/clickbuffer.py): /c redirects without the database; the clicks
are written once, with their click postbacks, by a writer or on demand by /cv.

Real Redis and PostgreSQL; the writer's rounds run in the test's process here (the worker
process runs the same loop, tested in tests/integration/test_click_buffer_worker.py).
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext

from postbacks.models import Delivery
from tests import factories
from tests.integration.brokers import free_port
from tracker import clickbuffer, services
from tracker.models import Click, Conversion

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def buffer(settings, tmp_path):
    """The click buffer on this test's Redis database, emptied before and after."""
    settings.TRACKER_CLICK_BUFFER_REDIS_URL = os.environ["REDIS_URL"]
    settings.TRACKER_CLICK_SPOOL_DIR = str(tmp_path / "spool")
    settings.TRACKER_CLICK_CLAIM_SECONDS = 30.0
    client = redis.Redis.from_url(os.environ["REDIS_URL"])

    def empty() -> None:
        client.delete(clickbuffer.STREAM)
        for key in client.scan_iter(clickbuffer.COPY_KEY.format("*")):
            client.delete(key)

    empty()
    yield client
    empty()


def visit(client, campaign, **params) -> str:
    """/c on ``campaign``: the click ID the redirect carries."""
    answer = client.get(f"/c/{campaign.key}", params)
    assert answer.status_code == 302, answer.content
    return parse_qs(urlsplit(answer["Location"]).query)["s2"][0]


def test_a_click_round_trips_through_its_encoding():
    made = factories.click(var1="zone 7", ip="203.0.113.9", user_agent="Mozilla/5.0 \u2603")
    stored = Click.objects.get(pk=made.pk)

    copy = clickbuffer.decode(clickbuffer.encode(stored))

    for field in Click._meta.concrete_fields:
        assert getattr(copy, field.attname) == getattr(stored, field.attname), field.name


def test_c_redirects_without_the_database_and_a_writer_stores_the_click_once(buffer, client):
    campaign = factories.campaign()
    visit(client, campaign)  # loads the campaign into the process's cache
    clickbuffer.Flusher(services.click_plan).round()
    Click.objects.all().delete()

    with CaptureQueriesContext(connection) as queries:
        click_id = visit(client, campaign, external_id="ext-1")

    assert len(queries) == 0
    assert not Click.objects.filter(pk=click_id).exists()
    assert buffer.xlen(clickbuffer.STREAM) == 1
    assert buffer.exists(clickbuffer.COPY_KEY.format(click_id))

    handled = clickbuffer.Flusher(services.click_plan).round()

    assert handled == 1
    stored = Click.objects.get(pk=click_id)
    assert (stored.external_id, stored.campaign_id) == ("ext-1", campaign.pk)
    assert buffer.xlen(clickbuffer.STREAM) == 0
    assert not buffer.exists(clickbuffer.COPY_KEY.format(click_id))


def test_click_postbacks_are_planned_once_when_a_click_is_written_twice(buffer, client):
    campaign = factories.campaign()
    factories.rule("http://127.0.0.1:9/click?ext={externalid}", event_type="click")
    click_id = visit(client, campaign, external_id="ext-2")
    payload = buffer.get(clickbuffer.COPY_KEY.format(click_id))
    # The same click added a second time (a spool drained after Redis took it after all).
    buffer.xadd(clickbuffer.STREAM, {"c": payload})

    writer = clickbuffer.Flusher(services.click_plan)
    while writer.round():
        pass

    assert Click.objects.filter(pk=click_id).count() == 1
    delivery = Delivery.objects.get(click_id=click_id)
    assert delivery.url.endswith("ext=ext-2")


def test_cv_finds_a_click_still_in_the_buffer(buffer, client):
    campaign = factories.campaign()
    factories.rule("http://127.0.0.1:9/click?c={click_id}", event_type="click")
    factories.rule("http://127.0.0.1:9/cv?c={click_id}&p={payout}")
    click_id = visit(client, campaign)

    answer = client.get("/cv", {"click_id": click_id, "payout": "2.5", "txid": "T-1"})

    assert answer.status_code == 200, answer.content
    assert Conversion.objects.get(click_id=click_id).txid == "T-1"
    assert Delivery.objects.filter(click_id=click_id).count() == 2  # click and conversion
    # The writer meets the stored click later: nothing more is written or planned.
    assert clickbuffer.Flusher(services.click_plan).round() == 1
    assert Click.objects.filter(pk=click_id).count() == 1
    assert Delivery.objects.filter(click_id=click_id).count() == 2


def test_cv_for_an_unknown_click_id_is_still_a_404(buffer, client):
    answer = client.get("/cv", {"click_id": "6f1c1b35-3b7c-4c55-9a59-0b1b7d2f1e11"})

    assert answer.status_code == 404
    assert answer.json()["error"] == "unknown_click_id"


def test_lander_click_through_finds_a_buffered_click(buffer, client):
    campaign = factories.campaign()
    click_id = visit(client, campaign)

    answer = client.get("/lp/click", {"click_id": click_id})

    assert answer.status_code == 302
    assert Click.objects.get(pk=click_id).lander_clicked_at is not None


def test_clicks_are_spooled_while_redis_is_unreachable_and_moved_when_it_answers(
    buffer, client, settings
):
    campaign = factories.campaign()
    visit(client, campaign)
    settings.TRACKER_CLICK_BUFFER_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    spooled = [visit(client, campaign, external_id=f"ext-{n}") for n in range(3)]

    assert buffer.xlen(clickbuffer.STREAM) == 1  # only the warm-up click
    assert len(os.listdir(settings.TRACKER_CLICK_SPOOL_DIR)) == 1

    settings.TRACKER_CLICK_BUFFER_REDIS_URL = os.environ["REDIS_URL"]
    visit(client, campaign, external_id="after")  # reaches Redis, then drains the spool

    assert buffer.xlen(clickbuffer.STREAM) == 5
    assert os.listdir(settings.TRACKER_CLICK_SPOOL_DIR) == []
    writer = clickbuffer.Flusher(services.click_plan)
    while writer.round():
        pass
    assert Click.objects.filter(pk__in=spooled).count() == 3


def test_a_writer_takes_over_what_a_dead_writer_read(buffer, client, settings):
    campaign = factories.campaign()
    click_id = visit(client, campaign)
    dead = clickbuffer.Flusher(services.click_plan)
    dead._ensure_group()
    dead.name = "dead-writer"
    assert len(dead._read(buffer, ">", block=None)) == 1  # read, never acknowledged
    settings.TRACKER_CLICK_CLAIM_SECONDS = 0.0

    alive = clickbuffer.Flusher(services.click_plan)
    alive._claim_abandoned()
    alive.round()

    assert Click.objects.filter(pk=click_id).exists()
    assert buffer.xpending(clickbuffer.STREAM, clickbuffer.GROUP)["pending"] == 0
