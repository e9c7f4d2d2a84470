"""Delays and retries against an injected clock (time-machine), in process: the dispatcher
claims, sends to a real local receiver and records as a worker does, while the test moves
the time instead of waiting for it. Minutes, hours and days cost nothing here.

The real-time counterpart, through a Celery worker process and the sweeper, is
tests/integration/test_pipeline.py::test_delayed_rule_fires_no_earlier_than_its_delay.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from postbacks import http_async
from postbacks.dispatcher import Dispatcher, Finished, send
from postbacks.models import Attempt, Delivery
from postbacks.receiver import Reply
from tests.conftest import campaign_with_rule, convert, stop_running_workers

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PATH = "/pb?cid={externalid}&tx={txid}"


@pytest.fixture
def dispatcher():
    stop_running_workers()  # a live worker would claim these deliveries too
    item = Dispatcher()
    yield item
    item.pool.shutdown(wait=True)
    http_async.client_close()


def deliver_due(dispatcher: Dispatcher) -> list:
    """One round of a worker: claim what is due now, send it, record the results."""
    claimed = dispatcher.claim(10)
    dispatcher.record([Finished(item, *send(item)) for item in claimed])
    return claimed


@pytest.mark.parametrize("delay", [1, 4, 3600, 3 * 86400], ids=["1s", "4s", "1h", "3d"])
def test_a_delayed_rule_is_sent_at_its_delay_and_not_before(dispatcher, receiver, client, delay):
    campaign, _rule = campaign_with_rule(receiver.url + PATH, delay_seconds=delay)
    with time_machine.travel(START, tick=False) as clock:
        convert(client, campaign, "ext-1", txid="D-1")
        assert Delivery.objects.get().due_at == START + timedelta(seconds=delay)

        clock.shift(delay - 0.5)
        assert deliver_due(dispatcher) == []
        assert receiver.received == []

        clock.shift(0.5)
        assert len(deliver_due(dispatcher)) == 1

    (got,) = receiver.wait_for(1)
    assert got.query == {"cid": "ext-1", "tx": "D-1"}
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == ("delivered", 1)


def test_retries_wait_their_backoff_then_deliver(dispatcher, receiver, client):
    """500, 503, then 200: each retry is due after the rule's doubling backoff (±20 %
    jitter), not a second earlier; all three attempts logged."""
    receiver.script(Reply(500, body="down"), Reply(503, body="busy"), Reply(200))
    campaign, _rule = campaign_with_rule(
        receiver.url + PATH, retry_base_seconds=600, max_attempts=5
    )
    with time_machine.travel(START, tick=False) as clock:
        convert(client, campaign, "ext-2", txid="R-1")
        assert len(deliver_due(dispatcher)) == 1

        for attempt, base in ((2, 600), (3, 1200)):
            delivery = Delivery.objects.get()
            assert (delivery.status, delivery.attempt_count) == ("scheduled", attempt - 1)
            wait = (delivery.due_at - datetime.now(UTC)).total_seconds()
            assert 0.8 * base <= wait <= 1.2 * base

            clock.move_to(delivery.due_at - timedelta(seconds=1))
            assert deliver_due(dispatcher) == []
            assert len(receiver.received) == attempt - 1

            clock.move_to(delivery.due_at)
            assert len(deliver_due(dispatcher)) == 1

    assert len(receiver.wait_for(3)) == 3
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == ("delivered", 3)
    attempts = Attempt.objects.filter(delivery=delivery).order_by("number")
    assert list(attempts.values_list("number", "status_code", "outcome")) == [
        (1, 500, "retry"), (2, 503, "retry"), (3, 200, "delivered"),
    ]  # fmt: skip


def test_attempts_exhausted_fail_at_the_last_one(dispatcher, receiver, client):
    receiver.default = Reply(503)
    campaign, _rule = campaign_with_rule(
        receiver.url + PATH, retry_base_seconds=3600, max_attempts=3
    )
    with time_machine.travel(START, tick=False) as clock:
        convert(client, campaign, "ext-3", txid="X-1")
        for _ in range(3):
            clock.move_to(Delivery.objects.get().due_at)
            assert len(deliver_due(dispatcher)) == 1
        clock.shift(30 * 86400)
        assert deliver_due(dispatcher) == []

    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    assert "gave up after 3 attempts" in delivery.last_error
    assert len(receiver.received) == 3
