"""One sweep, one purge at a time across processes and hosts: while another session holds
the job's advisory lock, a run does nothing; once it is let go, the next run works."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from postbacks import services, tasks
from postbacks.models import Attempt, Delivery, Worker
from tests import factories
from tests.conftest import _database_url, stop_running_workers

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory locks: PostgreSQL"),
]


@contextmanager
def held_elsewhere(name: str) -> Iterator[None]:
    """The job's lock, held by another session (another worker process or host)."""
    with psycopg.connect(_database_url(), autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name]).fetchone()[0]
        yield
        # Let go before closing: a closed session's locks go with its server process, a
        # moment later.
        other.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])


def a_lost_worker_s_delivery() -> Delivery:
    stop_running_workers()  # a live test worker would sweep it too
    delivery = factories.delivery("http://x.example/pb", status="sending", attempt_count=1)
    Worker.objects.create(name="gone:1", heartbeat_at=timezone.now() - timedelta(minutes=5))
    Delivery.objects.filter(pk=delivery.pk).update(
        claimed_by="gone:1", lease_expires_at=timezone.now() + timedelta(minutes=5)
    )
    return delivery


def test_a_sweep_skips_its_turn_while_another_one_runs():
    delivery = a_lost_worker_s_delivery()
    with held_elsewhere(services.SWEEP_LOCK):
        assert services.deliveries_sweep() == {"reclaimed": 0, "due": 0, "woken": 0, "skipped": 1}
        assert Delivery.objects.get(pk=delivery.pk).status == "sending"
    swept = services.deliveries_sweep()
    assert (swept["reclaimed"], swept["skipped"]) == (1, 0)
    assert Delivery.objects.get(pk=delivery.pk).status == "scheduled"
    assert Attempt.objects.filter(delivery=delivery, error__contains="Worker lost").count() == 1


def test_a_second_retention_run_does_nothing_while_one_runs(settings):
    settings.POSTBACKS_RETENTION_DAYS = 30
    old = factories.delivery("http://x.example/pb", status="delivered")
    moment = timezone.now() - timedelta(days=40)
    Delivery.objects.filter(pk=old.pk).update(created_at=moment, updated_at=moment)
    with held_elsewhere(tasks.RETENTION_LOCK):
        assert tasks.retention_task() == {"attempts": 0, "deliveries": 0}
        assert Delivery.objects.filter(pk=old.pk).exists()
    assert tasks.retention_task() == {"attempts": 0, "deliveries": 1}
