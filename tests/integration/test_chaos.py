"""Chaos: 1,000 conversions, two rules, a flaky slow receiver, worker kills, a Redis restart.

The receiver answers 500 to 30 % of requests and takes 0.2-1 s to answer; during the run
the worker is SIGKILLed three times and the test's own redis-server is restarted once.
After settling, every delivery must be delivered, every request the receiver got must
match an attempt row, and every duplicate the receiver saw must carry one delivery ID.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import defaultdict

import pytest
from django.db import connection
from django.db.models import Count

from postbacks.models import Attempt, Delivery
from postbacks.receiver import Received, Receiver, Reply
from tests import factories
from tests.conftest import WorkerProcess, wait_until
from tests.integration.brokers import publishing_to
from tracker.ingest import Inbound, conversion_ingest
from tracker.models import Click

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

CONVERSIONS = 1000
FAILURE_SHARE = 0.3


@pytest.fixture
def flaky_receiver():
    chance = random.Random(5)
    lock = threading.Lock()

    def answer(item: Received) -> Reply:
        with lock:
            delay, fails = chance.uniform(0.2, 1.0), chance.random() < FAILURE_SHARE
        return Reply(500 if fails else 200, delay=delay, body="down" if fails else "OK")

    server = Receiver(responder=answer).start()
    yield server
    server.stop()


@pytest.fixture
def chaos_worker(_worker_process, transactional_db, redis_server, tmp_path):
    _worker_process.stop()  # it shares the database; the `worker` fixture restarts it later
    env = {
        "CELERY_BROKER_URL": redis_server.url,
        # Keep the backoff short: a delivery unlucky enough to fail eight times would
        # otherwise wait minutes before its next attempt.
        "POSTBACKS_BACKOFF_MAX_SECONDS": "3",
    }
    worker = WorkerProcess(tmp_path, env=env, name="chaos")
    worker.start()
    yield worker
    worker.stop()


def test_nothing_is_lost_or_wrongly_failed_under_chaos(
    chaos_worker, redis_server, flaky_receiver, capsys
):
    source = factories.traffic_source()
    campaign = factories.campaign(source)
    path = "/pb/{n}?cid={click_id}&d={delivery.id}&payout={payout}"
    for n in (1, 2):
        factories.rule(
            flaky_receiver.url + path.replace("{n}", str(n)),
            name=f"Rule {n}",
            sources=[source],
            retry_base_seconds=1,
            max_attempts=12,
            timeout_seconds=3,
        )
    offer = campaign.campaign_offers.first().offer
    clicks = Click.objects.bulk_create(
        Click(campaign=campaign, offer=offer, traffic_source=source, external_id=f"ext-{i}")
        for i in range(CONVERSIONS)
    )
    converted_at: dict[str, float] = {}

    def convert_all() -> None:
        with publishing_to(redis_server.url):
            for click in clicks:
                converted_at[str(click.pk)] = time.time()
                data = {"click_id": str(click.pk), "payout": "1.5", "txid": f"T-{click.pk}"}
                answer = conversion_ingest(data, Inbound(endpoint="/cv", http_method="GET"))
                assert answer.status == 200, answer.body
        connection.close()

    producer = threading.Thread(target=convert_all)
    started = time.monotonic()
    producer.start()
    for at, action in ((4, "kill"), (10, "redis"), (16, "kill"), (24, "kill")):
        time.sleep(max(0.0, started + at - time.monotonic()))
        if action == "kill":
            chaos_worker.kill()
            chaos_worker.start()
        else:
            redis_server.stop()
            time.sleep(1)
            redis_server.start()
    producer.join()

    settled = wait_until(
        lambda: (
            Delivery.objects.count() == 2 * CONVERSIONS
            and not Delivery.objects.filter(status__in=["scheduled", "sending"]).exists()
        ),
        timeout=240,
        interval=1,
    )
    counts = dict(Delivery.objects.values_list("status").annotate(n=Count("id")))
    assert settled, f"not settled: {counts}"
    assert counts == {"delivered": 2 * CONVERSIONS}  # none failed, though some got a 2xx late

    received = list(flaky_receiver.received)
    attempts = defaultdict(list)
    for delivery_id, code in Attempt.objects.values_list("delivery__public_id", "status_code"):
        attempts[str(delivery_id)].append(code)
    by_delivery = defaultdict(list)
    ids_per_event = defaultdict(set)
    for item in received:
        by_delivery[item.query["d"]].append(item)
        ids_per_event[(item.path.split("?")[0], item.query["cid"])].add(item.query["d"])
        assert item.headers["Idempotency-Key"] == item.query["d"]
    # Every request the receiver got is an attempt row (an attempt logged as lost counts).
    for delivery_id, items in by_delivery.items():
        assert len(items) <= len(attempts[delivery_id]), delivery_id
        answered = [code for code in attempts[delivery_id] if code is not None]
        assert len(answered) <= len(items), delivery_id
    # Every duplicate the receiver saw carries the same delivery ID.
    assert len(ids_per_event) == 2 * CONVERSIONS
    assert all(len(ids) == 1 for ids in ids_per_event.values())

    first_ok: dict[str, float] = {}
    click_of: dict[str, str] = {}
    for item in received:
        click_of[item.query["d"]] = item.query["cid"]
        if 200 <= item.status < 300:
            first_ok.setdefault(item.query["d"], item.at)
    latencies = sorted(at - converted_at[click_of[d]] for d, at in first_ok.items())
    lost = sum(1 for codes in attempts.values() for code in codes if code is None)
    with capsys.disabled():  # the figures belong in the CI log
        print(
            f"\nchaos: {len(received)} requests for {2 * CONVERSIONS} deliveries, "
            f"{sum(len(v) for v in attempts.values())} attempts ({lost} without an answer); "
            f"conversion -> first 2xx: p50 {statistics.median(latencies):.2f} s, "
            f"p90 {latencies[int(len(latencies) * 0.9)]:.2f} s, "
            f"p99 {latencies[int(len(latencies) * 0.99)]:.2f} s, max {latencies[-1]:.2f} s"
        )
