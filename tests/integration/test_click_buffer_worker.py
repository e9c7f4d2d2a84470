"""The click buffer end to end: /c puts clicks on the Redis stream, a real Celery worker
process writes them once and fires their click postbacks to a real local receiver; a worker
killed with clicks read and not acknowledged leaves them to the next one."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from postbacks.models import Delivery
from tests import factories
from tests.conftest import WorkerProcess, wait_until
from tracker import clickbuffer
from tracker.models import Click

pytestmark = pytest.mark.integration

CLICKS = 40


@pytest.fixture
def buffered(settings, tmp_path):
    """The click buffer on, for this process's /c and for the worker it starts."""
    url = os.environ["REDIS_URL"]
    settings.TRACKER_CLICK_BUFFER_REDIS_URL = url
    settings.TRACKER_CLICK_SPOOL_DIR = str(tmp_path / "spool")
    client = redis.Redis.from_url(url)
    client.delete(clickbuffer.STREAM)
    yield client
    client.delete(clickbuffer.STREAM)


@pytest.fixture
def buffer_worker(_worker_process, transactional_db, buffered, tmp_path):
    _worker_process.stop()  # it shares the database; the `worker` fixture restarts it later
    env = {
        "TRACKER_CLICK_BUFFER_REDIS_URL": os.environ["REDIS_URL"],
        "TRACKER_CLICK_CLAIM_SECONDS": "2",
    }
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        process = WorkerProcess(tmp_path / name, env=env, name=name)
        (tmp_path / name).mkdir()
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def visit(client, campaign, n: int) -> str:
    answer = client.get(f"/c/{campaign.key}", {"external_id": f"ext-{n}"})
    assert answer.status_code == 302, answer.content
    return parse_qs(urlsplit(answer["Location"]).query)["s2"][0]


def test_buffered_clicks_are_written_once_with_their_postbacks(buffer_worker, receiver, client):
    campaign = factories.campaign()
    factories.rule(receiver.url + "/click?ext={externalid}&cid={click_id}", event_type="click")
    buffer_worker("buf")

    click_ids = {visit(client, campaign, n) for n in range(CLICKS)}

    assert wait_until(lambda: Click.objects.filter(pk__in=click_ids).count() == CLICKS, 30)
    arrived = receiver.wait_for(CLICKS, timeout=30)
    assert sorted(item.query["cid"] for item in arrived) == sorted(click_ids)
    assert Delivery.objects.filter(click_id__in=click_ids).count() == CLICKS


def test_clicks_a_killed_worker_read_are_written_by_the_next(buffer_worker, buffered, client):
    campaign = factories.campaign()
    first = buffer_worker("first")

    def reading() -> bool:
        try:
            return bool(buffered.xinfo_consumers(clickbuffer.STREAM, clickbuffer.GROUP))
        except redis.ResponseError:
            return False  # no group yet

    assert wait_until(reading, 30)  # its writer waits on the stream (XREADGROUP BLOCK)
    first.pause()
    click_ids = {visit(client, campaign, n) for n in range(CLICKS)}
    # Redis handed the frozen writer's blocked read what arrived first: read, never written.
    taken = buffered.xpending(clickbuffer.STREAM, clickbuffer.GROUP)["pending"]
    first.kill()
    assert taken >= 1

    buffer_worker("second")

    assert wait_until(lambda: Click.objects.filter(pk__in=click_ids).count() == CLICKS, 30)
    assert wait_until(
        lambda: buffered.xpending(clickbuffer.STREAM, clickbuffer.GROUP)["pending"] == 0, 10
    )
    assert Click.objects.filter(pk__in=click_ids).count() == CLICKS
