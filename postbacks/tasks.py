"""Celery tasks: thin wrappers that call the dispatcher and ``postbacks.services``."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import shared_task
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import worker_process_init, worker_ready
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from postbacks import services
from postbacks.dispatcher import Dispatcher
from postbacks.models import Attempt, Delivery
from tracker import db

log = logging.getLogger(__name__)

# Rows per DELETE statement: short statements, so the log table is never locked for long.
RETENTION_BATCH = 5000
# The periodic task stops after this many seconds (under CELERY_TASK_SOFT_TIME_LIMIT); the
# next run goes on where it stopped.
RETENTION_TASK_SECONDS = 90.0
# The advisory lock a purge holds while it runs (tracker.db.single_run).
RETENTION_LOCK = "postbacks.retention"
FINISHED = (Delivery.Status.DELIVERED, Delivery.Status.FAILED, Delivery.Status.CANCELLED)


@shared_task(name="postbacks.dispatch", ignore_result=True)
def dispatch_task() -> dict[str, int]:
    """Wake-up: this process's dispatcher sends whatever is due (idempotent, no arguments)."""
    return Dispatcher.for_process().run()


@shared_task(name="postbacks.sweep", ignore_result=True)
def sweep_task() -> dict[str, int]:
    """Take back deliveries of lost workers; wake a dispatcher if any is due. Every worker
    process sweeps on its own maintenance thread; this task is for a manual run."""
    return services.deliveries_sweep()


@worker_process_init.connect
def maintenance_in_pool_process(**kwargs: object) -> None:
    """Each prefork process beats and sweeps on a thread of its own (started after the fork:
    the main process keeps no thread that a fork could copy mid-lock)."""
    Dispatcher.for_process().start_maintenance()


@worker_ready.connect
def maintenance_without_prefork(sender: object = None, **kwargs: object) -> None:
    """With the threads or solo pool, tasks run in the main process: it beats and sweeps."""
    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        Dispatcher.for_process().start_maintenance()


@dataclass
class Purged:
    attempts: int = 0
    deliveries: int = 0
    finished: bool = True  # False: stopped by the time budget, more is left

    def as_dict(self) -> dict[str, int]:
        return {"attempts": self.attempts, "deliveries": self.deliveries}


def old_attempts(cutoff: datetime) -> QuerySet[Attempt]:
    """Attempts started before ``cutoff`` (index attempt_started_idx)."""
    return Attempt.objects.filter(started_at__lt=cutoff)


def old_deliveries(cutoff: datetime) -> QuerySet[Delivery]:
    """Finished deliveries (delivered, failed, cancelled) unchanged since before ``cutoff``.

    ``created_at`` is never after ``updated_at``: its condition is implied, and lets the
    database walk the created_at index from the oldest row.
    """
    return Delivery.objects.filter(
        status__in=FINISHED, created_at__lt=cutoff, updated_at__lt=cutoff
    )


def retention_purge(
    days: int,
    *,
    batch_size: int = RETENTION_BATCH,
    max_seconds: float | None = None,
    now: datetime | None = None,
) -> Purged:
    """Delete attempts and finished deliveries older than ``days`` days, in batches.

    Each batch is one short transaction of at most ``batch_size`` rows: first the old
    attempts (the log), then the old finished deliveries with any attempts they still have.
    Scheduled and in-flight deliveries are kept, whatever their age. Idempotent: a second
    run finds nothing. ``max_seconds`` stops between two batches (``finished`` False).
    ``days`` 0 or less deletes nothing.
    """
    purged = Purged()
    if days <= 0:
        return purged
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds

    def out_of_time() -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            purged.finished = False
        return not purged.finished

    while not out_of_time():
        batch = old_attempts(cutoff).order_by("started_at").values("pk")[:batch_size]
        deleted, _ = Attempt.objects.filter(pk__in=batch).delete()
        purged.attempts += deleted
        if deleted < batch_size:
            break
    while not out_of_time():
        with transaction.atomic():
            # Locked, so a delivery retried meanwhile (back to scheduled) is skipped.
            ids = list(
                old_deliveries(cutoff)
                .order_by("created_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:batch_size]
            )
            if ids:
                # The ORM cascade: one DELETE of their attempts, one of the deliveries.
                _, per_model = Delivery.objects.filter(pk__in=ids).only("pk").delete()
                purged.attempts += per_model.get(Attempt._meta.label, 0)
                purged.deliveries += per_model.get(Delivery._meta.label, 0)
        if len(ids) < batch_size:
            break
    log.info(
        "Retention (%d days): deleted %d attempts and %d finished deliveries%s",
        days,
        purged.attempts,
        purged.deliveries,
        "" if purged.finished else "; stopped on the time budget, more left for the next run",
    )
    return purged


@shared_task(name="postbacks.retention", ignore_result=True)
def retention_task() -> dict[str, int]:
    """Delete the log older than POSTBACKS_RETENTION_DAYS (Celery beat, hourly; 0: off).

    One purge at a time (an advisory lock): a second beat's run, or a run sent while the
    last one is still going, finds the lock taken and does nothing."""
    with db.single_run(RETENTION_LOCK) as alone:
        if not alone:
            log.info("Retention: another run is going on; this one does nothing.")
            return Purged().as_dict()
        return retention_purge(
            settings.POSTBACKS_RETENTION_DAYS, max_seconds=RETENTION_TASK_SECONDS
        ).as_dict()
