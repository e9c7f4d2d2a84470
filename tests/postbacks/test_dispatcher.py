"""The batch dispatcher against the database and a real local receiver."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from postbacks import http_async
from postbacks.dispatcher import Claimed, Dispatcher, Finished
from postbacks.models import Attempt, Delivery, PostbackRule, Worker
from postbacks.receiver import Reply
from postbacks.services import deliveries_reclaim, next_state, rules_for
from postbacks.transports import Outcome, PreparedRequest, Result
from tests import factories
from tests.conftest import stop_running_workers
from tracker.health import cursor_timestamp

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispatcher(settings):
    # The integration tests' worker, left running, would claim these tests' deliveries too.
    stop_running_workers()
    settings.POSTBACKS_HOST_CONCURRENCY = 3
    settings.POSTBACKS_DISPATCH_THREADS = 8
    item = Dispatcher()
    item.beat()
    yield item
    item.pool.shutdown(wait=True)
    http_async.client_close()  # made with this test's limits


def test_claim_takes_the_oldest_due_first_within_the_host_cap(dispatcher):
    slow = [factories.delivery("http://slow.example/pb", due_in=-10 + i) for i in range(5)]
    fast = [factories.delivery("http://fast.example/pb", due_in=-3 + i) for i in range(2)]
    later = factories.delivery("http://fast.example/pb", due_in=60)

    claimed = dispatcher.claim(10)

    assert [d.pk for d in claimed] == [slow[0].pk, slow[1].pk, slow[2].pk, fast[0].pk, fast[1].pk]
    rows = Delivery.objects.filter(pk__in=[d.pk for d in claimed])
    assert set(rows.values_list("status", "attempt_count", "claimed_by")) == {
        ("sending", 1, dispatcher.name)
    }
    released = Delivery.objects.filter(pk__in=[slow[3].pk, slow[4].pk, later.pk])
    assert set(released.values_list("status", "attempt_count", "claimed_by")) == {
        ("scheduled", 0, "")
    }
    # Claimed rows are never claimed twice; the loop counts them against the cap (not here).
    assert [d.pk for d in dispatcher.claim(10)] == [slow[3].pk, slow[4].pk]


def test_requests_in_flight_count_against_their_host_cap(dispatcher):
    slow = [factories.delivery("http://slow.example/pb", due_in=-10 + i) for i in range(3)]
    fast = factories.delivery("http://fast.example/pb", due_in=-1)
    dispatcher.per_host["slow.example:"] = 2  # two requests to it in flight: one slot left

    assert [d.pk for d in dispatcher.claim(10)] == [slow[0].pk, fast.pk]


def test_a_host_at_its_cap_is_skipped(dispatcher):
    for _ in range(3):
        factories.delivery("http://slow.example/pb", due_in=-5)
    other = factories.delivery("http://fast.example/pb", due_in=-1)
    dispatcher.per_host["slow.example:"] = 3  # three requests in flight to it already

    assert [d.pk for d in dispatcher.claim(10)] == [other.pk]


def test_record_writes_states_and_attempts_in_bulk(dispatcher, django_assert_max_num_queries):
    for _ in range(3):
        factories.delivery("http://x.example/pb", max_attempts=3)
    ok, retry, failed = dispatcher.claim(3)
    now = timezone.now()
    finished = [
        Finished(ok, Result(Outcome.DELIVERED, status_code=200, response_body="OK"), now),
        Finished(retry, Result(Outcome.RETRY, status_code=503, error="HTTP 503"), now),
        Finished(failed, Result(Outcome.FAILED, status_code=404, error="HTTP 404"), now),
    ]
    with django_assert_max_num_queries(4):  # savepoint, one UPDATE, one INSERT, release
        assert dispatcher.record(finished) == 3

    states = dict(Delivery.objects.values_list("pk", "status"))
    assert (states[ok.pk], states[retry.pk], states[failed.pk]) == (
        "delivered", "scheduled", "failed",
    )  # fmt: skip
    assert Delivery.objects.get(pk=retry.pk).due_at > now
    attempts = {a.delivery_id: a for a in Attempt.objects.all()}
    assert [(attempts[d.pk].number, attempts[d.pk].outcome) for d in (ok, retry, failed)] == [
        (1, "delivered"), (1, "retry"), (1, "failed"),
    ]  # fmt: skip


def test_a_late_result_cannot_change_a_delivery_taken_back(dispatcher):
    factories.delivery("http://x.example/pb")
    (claimed,) = dispatcher.claim(1)
    Delivery.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert deliveries_reclaim() == 1  # the sweeper logs the attempt as lost

    late = Finished(claimed, Result(Outcome.DELIVERED, status_code=200), timezone.now())
    assert dispatcher.record([late]) == 0

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == ("scheduled", 1)
    assert list(Attempt.objects.values_list("number", "outcome")) == [(1, "retry")]


def test_a_silent_worker_loses_its_deliveries_before_its_lease_ends(dispatcher):
    factories.delivery("http://x.example/pb", timeout_seconds=60)
    dispatcher.claim(1)
    assert deliveries_reclaim() == 0  # alive, lease far away
    Worker.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=30))

    assert deliveries_reclaim() == 1
    assert Delivery.objects.get().status == "scheduled"
    assert "Worker lost" in Attempt.objects.get().error


@pytest.mark.django_db(transaction=True)  # the recorder thread writes on its own connection
def test_loop_sends_everything_due_with_a_stable_delivery_id(dispatcher, receiver):
    receiver.script(Reply(500))
    deliveries = [
        factories.delivery(receiver.url + f"/pb?n={i}", headers={"Idempotency-Key": f"k{i}"})
        for i in range(6)
    ]
    counts = dispatcher._loop(max_seconds=5)

    assert counts == {"sent": 6, "recorded": 6}
    assert len(receiver.received) == 6
    assert {r.headers["Idempotency-Key"] for r in receiver.received} == {f"k{i}" for i in range(6)}
    assert sorted(Delivery.objects.values_list("status", flat=True)) == ["delivered"] * 5 + [
        "scheduled"
    ]
    assert Attempt.objects.count() == 6
    assert all(d.public_id for d in deliveries)


# --- what a claim carries ----------------------------------------------------------------


def test_claim_carries_the_planned_request(dispatcher):
    rule = factories.rule("http://x.example/pb")
    factories.delivery(
        "http://x.example/pb",
        rule=rule,
        method="POST",
        body='{"a": 1}',
        headers={"Content-Type": "application/json"},
        success_mode="regex",
        success_pattern="ok",
    )
    (claimed,) = dispatcher.claim(1)
    assert claimed.request() == PreparedRequest(
        "POST", "http://x.example/pb", '{"a": 1}', {"Content-Type": "application/json"},
        "regex", "ok",
    )  # fmt: skip
    assert (claimed.rule_id, claimed.is_test) == (rule.pk, False)


@pytest.mark.django_db(transaction=True)
def test_loop_sends_post_bodies_and_checks_the_answer(dispatcher, receiver):
    receiver.default = Reply(200, body='{"success": false}')
    factories.delivery(
        receiver.url + "/pb",
        method="POST",
        body="a=1&b=%26",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        success_mode="contains",
        success_pattern='"success": true',
        max_attempts=2,
        retry_base_seconds=1,
    )
    assert dispatcher._loop(max_seconds=5) == {"sent": 1, "recorded": 1}
    Delivery.objects.update(due_at=timezone.now())  # the retry, without waiting for it
    assert dispatcher._loop(max_seconds=5) == {"sent": 1, "recorded": 1}

    assert [(r.method, r.body) for r in receiver.received] == [("POST", b"a=1&b=%26")] * 2
    assert receiver.received[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    attempts = list(Attempt.objects.order_by("number").values_list("outcome", "status_code"))
    assert attempts == [("retry", 200), ("failed", 200)]
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.last_error == (
        'Answer 200 did not contain ""success": true" (gave up after 2 attempts)'
    )


# --- auto-disable ----------------------------------------------------------------------------


def results(dispatcher, *codes, rule, is_test=False):
    """Claim one delivery of ``rule`` per code and finish each with that HTTP answer, in
    order (200 delivered, 410 failed, other codes failed after their last attempt)."""
    for _ in codes:
        factories.delivery("http://x.example/pb", rule=rule, max_attempts=1, is_test=is_test)
    claimed = dispatcher.claim(len(codes))
    finished = []
    for item, code in zip(claimed, codes, strict=True):
        outcome = Outcome.DELIVERED if code < 300 else Outcome.RETRY
        if code == 410:
            outcome = Outcome.FAILED
        result = Result(outcome, status_code=code, error="" if code < 300 else f"HTTP {code}")
        finished.append(Finished(item, result, timezone.now()))
    return finished


def test_failures_in_a_row_deactivate_the_rule(dispatcher, django_assert_max_num_queries):
    rule = factories.rule("http://x.example/pb", disable_after_failures=3)
    waiting = factories.delivery("http://x.example/pb", rule=rule, due_in=3600)
    other = factories.delivery("http://x.example/pb", due_in=3600)  # another rule's: kept

    finished = results(dispatcher, 500, 500, rule=rule)
    with django_assert_max_num_queries(5):  # savepoint, UPDATE, INSERT, rule UPDATE, release
        dispatcher.record(finished)
    rule.refresh_from_db()
    assert (rule.consecutive_failures, rule.is_active, rule.needs_attention) == (2, True, False)

    dispatcher.record(results(dispatcher, 503, rule=rule))

    rule.refresh_from_db()
    assert (rule.consecutive_failures, rule.is_active, rule.needs_attention) == (3, False, True)
    assert rule.disabled_reason == (
        "Deactivated after 3 failed deliveries in a row; last error: HTTP 503"
    )
    assert rule.disabled_at is not None
    waiting.refresh_from_db()
    assert (waiting.status, waiting.last_error) == (
        "cancelled",
        "Cancelled: the rule was deactivated automatically. " + rule.disabled_reason,
    )
    assert Delivery.objects.get(pk=other.pk).status == "scheduled"


def test_a_delivered_one_resets_the_count(dispatcher):
    rule = factories.rule("http://x.example/pb", disable_after_failures=3)
    dispatcher.record(results(dispatcher, 500, 500, rule=rule))
    dispatcher.record(results(dispatcher, 500, 200, 500, rule=rule))  # in the order they ended

    rule.refresh_from_db()
    assert (rule.consecutive_failures, rule.is_active) == (1, True)
    dispatcher.record(results(dispatcher, 200, rule=rule))
    rule.refresh_from_db()
    assert (rule.consecutive_failures, rule.is_active) == (0, True)


def test_a_healthy_batch_writes_no_rule(dispatcher, django_assert_max_num_queries):
    rule = factories.rule("http://x.example/pb", disable_after_failures=3)
    finished = results(dispatcher, 200, 200, rule=rule)
    with django_assert_max_num_queries(5):  # the rule UPDATE matches no row: nothing to reset
        dispatcher.record(finished)
    assert PostbackRule.objects.get().consecutive_failures == 0


def test_retries_do_not_count(dispatcher):
    rule = factories.rule("http://x.example/pb", disable_after_failures=1)
    factories.delivery("http://x.example/pb", rule=rule, max_attempts=3)
    (claimed,) = dispatcher.claim(1)
    retry = Result(Outcome.RETRY, status_code=500, error="HTTP 500")
    dispatcher.record([Finished(claimed, retry, timezone.now())])

    rule.refresh_from_db()
    assert (rule.consecutive_failures, rule.is_active) == (0, True)


def test_410_deactivates_at_once_even_without_a_limit(dispatcher):
    rule = factories.rule("http://x.example/pb", disable_after_failures=0)
    waiting = factories.delivery("http://x.example/pb", rule=rule, due_in=3600)
    dispatcher.record(results(dispatcher, 500, 500, 500, rule=rule))
    assert PostbackRule.objects.get().is_active  # 0: never by count

    dispatcher.record(results(dispatcher, 410, rule=rule))

    rule.refresh_from_db()
    assert (rule.is_active, rule.needs_attention) == (False, True)
    assert rule.disabled_reason == "Deactivated: the destination answered 410 Gone"
    assert Delivery.objects.get(pk=waiting.pk).status == "cancelled"


def test_410_deactivates_even_when_a_later_one_was_delivered(dispatcher):
    rule = factories.rule("http://x.example/pb", disable_after_failures=5)
    dispatcher.record(results(dispatcher, 410, 200, rule=rule))

    rule.refresh_from_db()
    assert (rule.is_active, rule.consecutive_failures) == (False, 0)
    assert rule.disabled_reason == "Deactivated: the destination answered 410 Gone"


def test_test_deliveries_never_count(dispatcher):
    rule = factories.rule("http://x.example/pb", disable_after_failures=1)
    dispatcher.record(results(dispatcher, 500, 410, rule=rule, is_test=True))

    rule.refresh_from_db()
    assert (rule.consecutive_failures, rule.is_active, rule.needs_attention) == (0, True, False)


def test_a_rule_already_inactive_is_left_alone(dispatcher):
    rule = factories.rule("http://x.example/pb", disable_after_failures=1, is_active=False)
    waiting = factories.delivery("http://x.example/pb", rule=rule, due_in=3600)
    dispatcher.record(results(dispatcher, 410, rule=rule))

    rule.refresh_from_db()
    assert (rule.is_active, rule.needs_attention, rule.disabled_reason) == (False, False, "")
    assert Delivery.objects.get(pk=waiting.pk).status == "scheduled"


@pytest.mark.django_db(transaction=True)  # the cache is cleared when the batch commits
def test_auto_disable_over_http_clears_the_rules_cache(dispatcher, receiver):
    receiver.default = Reply(410, body="gone")
    rule = factories.rule(receiver.url + "/pb", disable_after_failures=5)
    factories.delivery(receiver.url + "/pb", rule=rule)
    waiting = factories.delivery(receiver.url + "/pb", rule=rule, due_in=3600)
    assert [r.pk for r in rules_for(rule.event_type)] == [rule.pk]  # cached for a while

    assert dispatcher._loop(max_seconds=5) == {"sent": 1, "recorded": 1}

    assert rules_for(rule.event_type) == []
    rule.refresh_from_db()
    assert (rule.is_active, rule.disabled_reason) == (
        False, "Deactivated: the destination answered 410 Gone",
    )  # fmt: skip
    assert Delivery.objects.get(pk=waiting.pk).status == "cancelled"
    assert Attempt.objects.get().error == "HTTP 410 Gone: the destination no longer exists"


@pytest.mark.django_db(transaction=True)
def test_recorders_of_several_workers_do_not_deadlock_on_rules():
    """Batches that touch the same rules in opposite orders, at once (PostgreSQL row locks;
    without the ordered lock this ends in 'deadlock detected' within a few rounds)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers: no row locks")
    rules = [factories.rule("http://x.example/pb", name=f"R{i}") for i in range(20)]
    errors = []

    def record_streaks(order, worker: Dispatcher) -> None:
        try:
            for round_number in range(30):
                result = Result(
                    Outcome.FAILED if round_number % 2 else Outcome.DELIVERED, status_code=500
                )
                moves = {}
                for pk, rule in enumerate(order, start=1):
                    claimed = Claimed(pk, None, "", "s2s", "GET", "", "", {}, 1, 1, 1, 1)
                    claimed.rule_id = rule.pk
                    move = next_state(
                        attempt_number=1,
                        max_attempts=1,
                        retry_base_seconds=1,
                        result=result,
                        now=timezone.now(),
                    )
                    moves[pk] = (Finished(claimed, result, timezone.now()), move)
                with transaction.atomic():
                    worker._auto_disable(moves, set(moves), timezone.now())
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=record_streaks, args=(rules[:: 1 if i % 2 else -1], Dispatcher()))
        for i in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Each batch took its rules whole, one batch after the other: the same count everywhere
    # (1 to 6: the workers' last batches failed, after some worker's last reset).
    (count,) = set(PostbackRule.objects.values_list("consecutive_failures", flat=True))
    assert 1 <= count <= 6


def test_a_row_the_database_refuses_costs_only_its_own_answer(dispatcher, monkeypatch):
    """Should the database still refuse a row (here: a NUL that nothing escaped), the batch
    is written row by row: the others keep their answer, the refused one is recorded
    without it; none is left "sending" for the sweeper to send again."""
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL refuses NUL bytes in text")
    monkeypatch.setattr("postbacks.models.deliveries.storable", lambda text: text)
    for _ in range(3):
        factories.delivery("http://x.example/pb")
    first, bad, last = dispatcher.claim(3)
    now = timezone.now()
    finished = [
        Finished(first, Result(Outcome.DELIVERED, status_code=200, response_body="OK"), now),
        Finished(bad, Result(Outcome.DELIVERED, status_code=200, response_body="GIF\x00"), now),
        Finished(last, Result(Outcome.RETRY, status_code=500, response_body="down"), now),
    ]

    assert dispatcher.record(finished) == 3

    states = dict(Delivery.objects.values_list("pk", "status"))
    assert (states[first.pk], states[bad.pk], states[last.pk]) == (
        "delivered", "delivered", "scheduled",
    )  # fmt: skip
    bodies = dict(Attempt.objects.values_list("delivery_id", "response_body"))
    assert bodies == {
        first.pk: "OK",
        bad.pk: "[answer not stored: the database refused it]",
        last.pk: "down",
    }


def test_a_claim_carries_what_the_metrics_label_and_the_logs_name(dispatcher, caplog):
    """The traffic source's name, the event type and creation time (metrics), and the
    delivery ID receivers see (log lines), read by the claim itself."""
    delivery = factories.delivery(
        "http://x.example/pb", traffic_source=factories.traffic_source("MGID")
    )
    (claimed,) = dispatcher.claim(1)
    assert claimed.traffic_source == "MGID"
    assert claimed.event_type == delivery.event_type
    assert cursor_timestamp(claimed.created_at) == delivery.created_at  # SQLite: text
    assert claimed.public_id == delivery.public_id

    Delivery.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with caplog.at_level("WARNING", logger="postbacks.services"):
        assert deliveries_reclaim() == 1
    assert f"Postback {delivery.public_id} attempt 1: taken back from lost worker" in caplog.text
