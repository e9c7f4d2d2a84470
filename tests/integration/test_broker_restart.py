"""A Redis restart with postbacks in flight: the same worker keeps delivering afterwards.

celery 5.7.0 (with kombu 5.7.0) crashed its consumer when Redis restarted with unacked
messages ("Unrecoverable error: AttributeError('NoneType' object has no attribute
'hostname')"): the worker process stayed up but never consumed again, so every later
postback waited for a manual restart. This test starts its own redis-server so it can
restart it; the shared Redis is not touched.
"""

from __future__ import annotations

import time

import pytest

from postbacks.models import Delivery
from postbacks.receiver import Receiver, Reply
from tests import factories
from tests.conftest import WorkerProcess, convert, wait_until
from tests.integration.brokers import publishing_to, worker_health

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

IN_FLIGHT = 3
AFTER_RESTART = 6
SLOW_SECONDS = 4


@pytest.fixture
def slow_receiver():
    server = Receiver(default=Reply(200, delay=SLOW_SECONDS)).start()
    yield server
    server.stop()


@pytest.fixture
def own_worker(_worker_process, transactional_db, redis_server, tmp_path):
    """A worker on our redis-server; the session's worker is stopped meanwhile, since it
    shares the database and its sweeper would deliver in its place."""
    _worker_process.stop()  # the `worker` fixture restarts it for the next test that needs it
    env = {
        "CELERY_BROKER_URL": redis_server.url,
        # Spare pool processes: while tasks run unacknowledged the consumer still waits on
        # Redis (BRPOP) for more, as a production worker with idle processes does. The crash
        # needed both.
        "CELERY_WORKER_CONCURRENCY": "6",
        # A wake-up stops claiming after 1 s, so postbacks planned after the restart need
        # a new message consumed from Redis rather than a dispatcher that is still polling.
        "POSTBACKS_DISPATCH_MAX_SECONDS": "1",
    }
    worker = WorkerProcess(tmp_path, env=env, name="redis-restart")
    worker.start()
    yield worker
    worker.stop()


def external_ids(receiver: Receiver) -> set[str]:
    return {item.query["click-id"] for item in receiver.received}


def test_redis_restart_with_postbacks_in_flight(own_worker, redis_server, slow_receiver, client):
    source = factories.traffic_source()
    campaign = factories.campaign(source)
    factories.rule(slow_receiver.url + factories.TABOOLA_PATH, sources=[source], timeout_seconds=15)
    before = {f"before-{n}" for n in range(IN_FLIGHT)}
    after = {f"after-{n}" for n in range(AFTER_RESTART)}

    with publishing_to(redis_server.url):
        for external_id in sorted(before):
            convert(client, campaign, external_id, txid="T")
        # Every postback is now held by the slow receiver: its task is unacknowledged.
        assert len(slow_receiver.wait_for(IN_FLIGHT, timeout=20)) == IN_FLIGHT

        redis_server.stop()
        time.sleep(1)
        redis_server.start()
        slow_receiver.default = Reply(200)
        # Let the tasks that were running through the restart finish.
        assert wait_until(
            lambda: Delivery.objects.filter(status="delivered").count() == IN_FLIGHT, timeout=30
        )
        time.sleep(2)

        restarted_at = time.monotonic()
        for external_id in sorted(after):
            convert(client, campaign, external_id, txid="T")
        arrived = wait_until(lambda: before | after <= external_ids(slow_receiver), timeout=40)

    settled = time.monotonic() - restarted_at
    health = worker_health(redis_server.url, own_worker.hostname)
    log = own_worker.log_path.read_text()
    assert arrived, (
        f"missing postbacks: {sorted((before | after) - external_ids(slow_receiver))}\n"
        f"worker_health: {health.returncode} {health.stdout}{health.stderr}\n"
        f"worker log:\n{log[-4000:]}"
    )
    print(
        f"the {len(after)} postbacks planned after the restart arrived within {settled:.1f} s "
        f"({len(slow_receiver.received)} requests in all)"
    )
    assert wait_until(
        lambda: Delivery.objects.filter(status="delivered").count() == len(before | after)
    )
    assert own_worker.alive and own_worker.starts == 1
    assert "Unrecoverable error" not in log
    assert health.returncode == 0, health.stdout + health.stderr
    assert health.stdout.startswith(f"OK: 1 worker(s) answered: {own_worker.hostname}")


def test_worker_health_fails_without_an_answering_worker(redis_server):
    nobody = worker_health(redis_server.url, timeout=1)
    assert nobody.returncode == 1
    assert "UNHEALTHY: no answer within 1 s from any worker" in nobody.stderr

    redis_server.stop()
    down = worker_health(redis_server.url, "w1@%h", timeout=1)
    assert down.returncode == 1
    assert "UNHEALTHY: broker unreachable" in down.stderr
