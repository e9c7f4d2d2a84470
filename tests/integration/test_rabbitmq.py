"""The pipeline on RabbitMQ: ``CELERY_BROKER_URL=amqp://...`` with a real worker, end to end.

Skipped only outside CI when no RabbitMQ answers; under CI it must run (``.ci/run`` starts it).
"""

from __future__ import annotations

import os

import pytest
from kombu import Connection

from postbacks.models import Delivery
from tests import factories
from tests.conftest import WorkerProcess, wait_until
from tests.integration.brokers import publishing_to, worker_health

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def reachable(url: str) -> str:
    """Empty when a broker answers at ``url``; otherwise why not."""
    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # any failure means "not usable here"
        return f"{exc.__class__.__name__}: {exc}"
    return ""


@pytest.fixture
def rabbitmq_url() -> str:
    problem = reachable(RABBITMQ_URL)
    if problem:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"RabbitMQ unreachable at {RABBITMQ_URL} under CI: {problem}")
        pytest.skip(f"RabbitMQ unreachable at {RABBITMQ_URL}: {problem}")
    return RABBITMQ_URL


@pytest.fixture
def rabbitmq_worker(_worker_process, transactional_db, rabbitmq_url, tmp_path):
    """A worker on RabbitMQ; the session's Redis worker is stopped meanwhile, since it shares
    the database and its sweeper would deliver in its place."""
    _worker_process.stop()  # the `worker` fixture restarts it for the next test that needs it
    worker = WorkerProcess(tmp_path, env={"CELERY_BROKER_URL": rabbitmq_url}, name="rabbitmq")
    worker.start()
    yield worker
    worker.stop()


def test_postback_end_to_end_on_rabbitmq(rabbitmq_worker, rabbitmq_url, receiver, client):
    assert "amqp://guest:**@127.0.0.1:5672//" in rabbitmq_worker.log_path.read_text()
    source = factories.traffic_source()
    campaign = factories.campaign(source)
    factories.rule(receiver.url + factories.TABOOLA_PATH, sources=[source])

    with publishing_to(rabbitmq_url, {"confirm_publish": True}):
        click = client.get(f"/c/{campaign.key}", {"external_id": "rmq-1"})
        click_id = click.cookies["cf_click_id"].value
        answer = client.get("/cv", {"click_id": click_id, "payout": "2.35", "txid": "R-1"})
    assert answer.status_code == 200, answer.content

    received = receiver.wait_for(1, timeout=30)
    assert [r.path for r in received] == [
        "/actions-handler/log/3/s2s-action?click-id=rmq-1&name=lead&revenue=2.35&currency=USD"
    ]
    assert wait_until(lambda: Delivery.objects.filter(status="delivered").count() == 1)

    health = worker_health(rabbitmq_url, rabbitmq_worker.hostname)
    assert health.returncode == 0, health.stdout + health.stderr
    assert health.stdout.startswith(f"OK: 1 worker(s) answered: {rabbitmq_worker.hostname}")
