"""The batch dispatcher against the database and a real local receiver."""

from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks.dispatcher import Dispatcher, Finished
from postbacks.models import Attempt, Delivery, Worker
from postbacks.receiver import Reply
from postbacks.services import deliveries_reclaim
from postbacks.transports import Outcome, Result
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispatcher(settings):
    settings.POSTBACKS_HOST_CONCURRENCY = 3
    settings.POSTBACKS_DISPATCH_THREADS = 8
    item = Dispatcher()
    item.beat()
    yield item
    item.pool.shutdown(wait=True)


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
