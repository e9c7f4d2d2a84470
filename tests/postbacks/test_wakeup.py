"""Coalesced wake-ups against the real Redis broker: a burst publishes one message."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings

from postbacks import wakeup
from postbacks.services import wake
from tests.conftest import stop_running_workers, wait_until
from tracker.celery import app

pytestmark = pytest.mark.skipif(
    not settings.POSTBACKS_WAKE_REDIS_URL, reason="wake-ups are coalesced through Redis"
)


@pytest.fixture
def queue():
    """The wake-up queue, emptied, with no worker consuming it; its length after the test."""
    stop_running_workers()
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("postbacks")
    client.delete(wakeup.FLAG_KEY)
    yield lambda: client.llen("postbacks")
    client.delete(wakeup.FLAG_KEY)
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("postbacks")


def test_a_burst_of_wake_ups_publishes_one_message(queue):
    for _ in range(50):
        assert wake()
    assert queue() == 1


def test_a_dispatcher_going_idle_lowers_the_flag_and_the_next_wake_up_is_published(queue):
    assert wake() and wake()
    wakeup.flag_lower()  # what a dispatcher does before its last claim
    assert wake()
    assert queue() == 2


def test_sharing_a_backlog_publishes_past_the_flag(queue):
    assert wake()
    assert wake(coalesce=False)
    assert queue() == 2


def test_the_flag_lapses_by_itself(queue, settings):
    """A dispatcher killed before lowering the flag costs at most its lifetime."""
    assert wakeup.flag_raise() is True
    assert wakeup.flag_raise() is False
    redis.Redis.from_url(settings.POSTBACKS_WAKE_REDIS_URL).pexpire(wakeup.FLAG_KEY, 1)
    assert wait_until(wakeup.flag_raise, timeout=2)


def test_without_a_reachable_redis_every_wake_up_is_published(queue, settings):
    settings.POSTBACKS_WAKE_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert wake() and wake()
    assert queue() == 2
