"""Several worker commands ("machines") on one database and broker, under load.

- Every live worker shares a backlog: a dispatcher that leaves deliveries due after its claim
  wakes an idle one (before, the first dispatcher to start purged the shared wake-up queue,
  and a second machine idled).
- The sweeper runs on a thread of each worker process: a killed worker's postbacks are taken
  back within seconds while every task slot is busy with long dispatch runs (before, the
  sweep was a beat task that expired waiting for a free slot).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks.models import Attempt, Delivery, EventType, Worker, destination_host
from postbacks.receiver import Reply
from postbacks.services import wake
from tests import factories
from tests.conftest import WorkerProcess, stop_running_workers, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(transactional_db, tmp_path):
    """Start worker commands of the test's own (the session's worker is stopped first: it
    would claim these deliveries too); all are stopped after the test."""
    stop_running_workers()
    started: list[WorkerProcess] = []

    def start(name: str, **env: str) -> WorkerProcess:
        log_dir = tmp_path / name
        log_dir.mkdir()
        process = WorkerProcess(log_dir, env=env, name=name)
        process.start()
        started.append(process)
        return process

    yield start
    Delivery.objects.filter(status=Delivery.Status.SCHEDULED).update(
        status=Delivery.Status.CANCELLED
    )
    for process in started:
        process.stop()


def _backlog(url: str, count: int) -> None:
    """``count`` deliveries due now, written in one statement (no wake-up published)."""
    click = factories.click()
    now = timezone.now()
    Delivery.objects.bulk_create(
        Delivery(
            event_type=EventType.CONVERSION,
            kind="s2s",
            click=click,
            idempotency_key=f"test:{uuid.uuid4()}",
            url=url,
            host=destination_host(url),
            due_at=now,
            timeout_seconds=10,
        )
        for _ in range(count)
    )


def _sent_by(process: WorkerProcess) -> int:
    return process.log_path.read_text().count("attempt 1: delivered")


def _pool_pids(process: WorkerProcess) -> set[str]:
    found = subprocess.run(
        ["pgrep", "-P", str(process.proc.pid)], capture_output=True, text=True, check=False
    )
    return set(found.stdout.split())


def _claimed_by(pids: set[str]) -> list[str]:
    names = Worker.objects.values_list("name", flat=True)
    return [name for name in names if name.split(":")[1] in pids]


def test_two_worker_commands_share_one_backlog(workers, receiver):
    """One wake-up, 600 postbacks, two worker commands of one process each: both send. (The
    sweeper, which also wakes a dispatcher when something is due, is slowed down to a minute:
    the wake-ups alone must share the work.)"""
    receiver.default = Reply(200, delay=0.05)
    limits = {
        "POSTBACKS_SWEEP_SECONDS": "60",
        "CELERY_WORKER_CONCURRENCY": "1",
        "POSTBACKS_DISPATCH_THREADS": "10",
        "POSTBACKS_HOST_CONCURRENCY": "10",
    }
    first, second = workers("a", **limits), workers("b", **limits)
    _backlog(f"{receiver.url}/pb", 600)

    assert wake()
    assert wait_until(
        lambda: Delivery.objects.filter(status="delivered").count() == 600, timeout=90
    )
    shares = (_sent_by(first), _sent_by(second))
    assert sum(shares) == 600, shares
    assert min(shares) >= 90, f"one worker idled: {shares}"
    assert len(receiver.received) == 600


def test_a_killed_worker_is_taken_back_while_every_task_slot_is_busy(workers, receiver):
    """Worker A's two processes run long dispatch runs against a slow receiver; worker B is
    SIGKILLed with postbacks in flight: they are taken back within POSTBACKS_WORKER_DEAD_SECONDS
    (3 s here) + a sweep period (1 s), not when a task slot frees up."""
    receiver.default = Reply(200, delay=0.5)
    limits = {"POSTBACKS_DISPATCH_THREADS": "4", "POSTBACKS_HOST_CONCURRENCY": "4"}
    busy = workers("a", CELERY_WORKER_CONCURRENCY="2", **limits)
    victim = workers("b", CELERY_WORKER_CONCURRENCY="1", **limits)
    _backlog(f"{receiver.url}/pb", 1500)  # 12 in flight at 0.5 s: about 60 s of work
    assert wake()

    busy_pids, victim_pids = _pool_pids(busy), _pool_pids(victim)

    def every_process_sending() -> list[str]:
        sending = set(
            Delivery.objects.filter(status="sending").values_list("claimed_by", flat=True)
        )
        names = [name for name in _claimed_by(busy_pids | victim_pids) if name in sending]
        return names if len(names) == 3 else []

    assert wait_until(every_process_sending, timeout=30), "not every process was dispatching"
    [victim_name] = _claimed_by(victim_pids)
    victim.kill()
    killed_at = time.monotonic()
    lost = set(
        Delivery.objects.filter(status="sending", claimed_by=victim_name).values_list(
            "pk", flat=True
        )
    )
    assert lost

    def taken_back() -> bool:
        return not Delivery.objects.filter(pk__in=lost, claimed_by=victim_name).exists()

    assert wait_until(taken_back, timeout=30, interval=0.05)
    waited = time.monotonic() - killed_at
    assert waited <= 10, f"taken back {waited:.1f} s after the kill"
    assert Attempt.objects.filter(delivery__in=lost, error__contains="Worker lost").count() == len(
        lost
    )
    # Meanwhile worker A was still dispatching on both processes (its runs last ~60 s).
    horizon = timezone.now() - timedelta(seconds=2)
    assert Delivery.objects.filter(status="scheduled").exists()
    assert (
        len(Worker.objects.filter(heartbeat_at__gte=horizon, name__in=_claimed_by(busy_pids))) == 2
    )
