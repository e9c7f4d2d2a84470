"""Takeover without beat: a worker SIGKILLed mid-delivery, another one sends its postbacks.

No process runs beat. Worker A claims every postback and its requests hang at the receiver;
worker B, started meanwhile, finds nothing to claim. A is SIGKILLed. B's maintenance threads
(every worker process sweeps, one sweep at a time through an advisory lock) see A's heartbeat
stop, take its deliveries back within ``POSTBACKS_WORKER_DEAD_SECONDS`` + one sweep period
(README, "Delivery guarantees"), and B sends each one: every postback delivered, and a
postback the receiver saw twice carries one delivery ID both times.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from django.conf import settings

from postbacks.models import Attempt, Delivery
from postbacks.receiver import Received, Receiver, Reply
from tests import factories
from tests.conftest import WorkerProcess, stop_running_workers, wait_until
from tracker.ingest import Inbound, conversion_ingest
from tracker.models import Click

pytestmark = [pytest.mark.timeout(180)]

POSTBACKS = 12


@pytest.fixture
def hanging_receiver():
    """Holds each postback's first request (up to 60 s: the worker sending it is killed
    meanwhile) and answers 200 at once to a request for a delivery ID it has seen."""
    seen: set[str] = set()
    lock = threading.Lock()

    def answer(item: Received) -> Reply:
        with lock:
            first = item.headers.get("Idempotency-Key") not in seen
            seen.add(item.headers.get("Idempotency-Key", ""))
        return Reply(200, delay=60.0 if first else 0.0)

    server = Receiver(responder=answer).start()
    yield server
    server.stop()


@pytest.fixture
def beatless_workers(transactional_db, tmp_path):
    """Worker commands without ``-B`` (the session's worker, which embeds beat, is
    stopped first); every one is stopped after the test."""
    stop_running_workers()
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        (tmp_path / name).mkdir()
        process = WorkerProcess(
            tmp_path / name,
            name=name,
            beat=False,
            env={
                "CELERY_WORKER_CONCURRENCY": "1",
                "POSTBACKS_DISPATCH_THREADS": str(2 * POSTBACKS),
                "POSTBACKS_HOST_CONCURRENCY": str(2 * POSTBACKS),
            },
        )
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_a_killed_worker_s_postbacks_are_sent_by_another_without_beat(
    beatless_workers, hanging_receiver
):
    source = factories.traffic_source()
    campaign = factories.campaign(source)
    # A timeout (and so a lease) far longer than the test: only the heartbeat's silence
    # can give the deliveries back.
    factories.rule(
        hanging_receiver.url + "/pb?cid={click_id}&d={delivery.id}",
        sources=[source],
        timeout_seconds=90,
        max_attempts=5,
    )
    first = beatless_workers("a")
    assert "beat" not in first.log_path.read_text().lower()
    offer = campaign.campaign_offers.first().offer
    clicks = Click.objects.bulk_create(
        Click(campaign=campaign, offer=offer, traffic_source=source, external_id=f"ext-{i}")
        for i in range(POSTBACKS)
    )
    for click in clicks:
        data = {"click_id": str(click.pk), "payout": "1", "txid": f"T-{click.pk}"}
        assert conversion_ingest(data, Inbound(endpoint="/cv", http_method="GET")).status == 200

    # Mid-delivery: every request is at the receiver, waiting for its answer.
    assert len(hanging_receiver.wait_for(POSTBACKS, timeout=30)) == POSTBACKS
    [victim] = set(Delivery.objects.values_list("claimed_by", flat=True))
    assert Delivery.objects.filter(status="sending", claimed_by=victim).count() == POSTBACKS

    second = beatless_workers("b")
    first.kill()
    killed_at = time.monotonic()

    def taken_back() -> bool:
        return not Delivery.objects.filter(claimed_by=victim).exists()

    assert wait_until(taken_back, timeout=60, interval=0.05)
    taken_after = time.monotonic() - killed_at
    assert wait_until(
        lambda: Delivery.objects.filter(status="delivered").count() == POSTBACKS, timeout=60
    ), dict(Delivery.objects.values_list("public_id", "status"))
    delivered_after = time.monotonic() - killed_at
    print(f"taken back {taken_after:.1f} s, delivered {delivered_after:.1f} s after the kill")

    figure = settings.POSTBACKS_WORKER_DEAD_SECONDS + settings.POSTBACKS_SWEEP_SECONDS
    # The figure, plus the sweep's own run and the polling of this test.
    assert taken_after <= figure + 1.0, f"taken back {taken_after:.1f} s after the kill"
    # Worker B sent every second attempt; the first ones are logged as lost.
    assert second.log_path.read_text().count("attempt 2: delivered") == POSTBACKS
    assert (
        Attempt.objects.filter(number=1, outcome="retry", error__contains="Worker lost").count()
        == POSTBACKS
    )
    # Each postback reached the receiver twice (the killed attempt, then B's), both times
    # with its one delivery ID, in the header and the URL alike.
    ids_per_click = defaultdict(set)
    for item in hanging_receiver.received:
        assert item.headers["Idempotency-Key"] == item.query["d"]
        ids_per_click[item.query["cid"]].add(item.query["d"])
    assert len(hanging_receiver.received) == 2 * POSTBACKS
    assert set(ids_per_click) == {str(click.pk) for click in clicks}
    assert all(len(ids) == 1 for ids in ids_per_click.values())
    assert {ids.pop() for ids in ids_per_click.values()} == {
        str(public_id) for public_id in Delivery.objects.values_list("public_id", flat=True)
    }
