"""What the engine is doing now, for the admin status page and the metrics collector.

Each figure is one cheap query: the due backlog and the oldest due delivery read the partial
index ``delivery_due_idx`` (scheduled rows only), deliveries being sent
``delivery_in_flight_idx``; workers and failing rules are small tables. No cache: the page
and a scrape see the database as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone

from postbacks.models import Delivery, PostbackRule, Worker
from tracker import health
from tracker.models import TaskRun

# Failing rules listed at most (the page; the collector counts them all the same way).
RULES_SHOWN = 50


@dataclass
class Backlog:
    """Deliveries waiting: ``due`` now (oldest due at ``oldest_due_at``), ``scheduled`` in
    all (due or later), ``sending`` (claimed, an attempt under way)."""

    due: int
    oldest_due_at: datetime | None
    scheduled: int
    sending: int

    def oldest_due_age(self, now: datetime) -> float:
        """Seconds the oldest due delivery has been due; 0.0 when none is."""
        if self.oldest_due_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_due_at).total_seconds())


@dataclass
class WorkerRow:
    """A dispatcher process's heartbeat; ``alive`` within ``POSTBACKS_WORKER_DEAD_SECONDS``."""

    name: str
    started_at: datetime
    heartbeat_at: datetime
    alive: bool

    def heartbeat_age(self, now: datetime) -> float:
        return max(0.0, (now - self.heartbeat_at).total_seconds())


@dataclass
class Status:
    """Everything the status page shows (see :func:`snapshot`)."""

    now: datetime
    backlog: Backlog
    workers: list[WorkerRow] = field(default_factory=list)
    task_runs: list[TaskRun] = field(default_factory=list)
    rules: list[PostbackRule] = field(default_factory=list)

    @property
    def live_workers(self) -> int:
        return sum(1 for worker in self.workers if worker.alive)

    def task_run(self, name: str) -> TaskRun | None:
        return next((run for run in self.task_runs if run.name == name), None)

    @property
    def beat_last_run(self) -> TaskRun | None:
        """The most recent run of any periodic task: beat's latest sign of life."""
        return max(self.task_runs, key=lambda run: run.finished_at, default=None)

    @property
    def retention_last_run(self) -> TaskRun | None:
        return self.task_run(RETENTION_TASK)


RETENTION_TASK = "postbacks.retention"


def backlog(now: datetime) -> Backlog:
    """The waiting deliveries at ``now`` (two queries on the partial indexes)."""
    scheduled = Delivery.objects.waiting().aggregate(
        scheduled=Count("pk"),
        due=Count("pk", filter=Q(due_at__lte=now)),
        oldest=Min("due_at"),
    )
    oldest = scheduled["oldest"]
    return Backlog(
        due=scheduled["due"],
        oldest_due_at=oldest if oldest is not None and oldest <= now else None,
        scheduled=scheduled["scheduled"],
        sending=Delivery.objects.in_flight().count(),
    )


def workers(now: datetime) -> list[WorkerRow]:
    """Every dispatcher process with a heartbeat row, newest heartbeat first."""
    horizon = now - timedelta(seconds=settings.POSTBACKS_WORKER_DEAD_SECONDS)
    return [
        WorkerRow(
            worker.name, worker.started_at, worker.heartbeat_at, worker.heartbeat_at >= horizon
        )
        for worker in Worker.objects.order_by("-heartbeat_at")
    ]


def failing_rules(limit: int = RULES_SHOWN) -> list[PostbackRule]:
    """Rules failing now: active with failed deliveries in a row, or deactivated
    automatically and not yet acknowledged (``needs_attention``); most failures first."""
    return list(
        PostbackRule.objects.filter(
            Q(is_active=True, consecutive_failures__gt=0) | Q(needs_attention=True)
        )
        .only(
            "pk",
            "name",
            "is_active",
            "consecutive_failures",
            "needs_attention",
            "disabled_reason",
            "disabled_at",
        )
        .order_by("-needs_attention", "-consecutive_failures", "pk")[:limit]
    )


def snapshot(now: datetime | None = None) -> Status:
    """All of the status page's figures at ``now`` (default: the current time)."""
    now = now or timezone.now()
    return Status(
        now=now,
        backlog=backlog(now),
        workers=workers(now),
        task_runs=health.task_runs(),
        rules=failing_rules(),
    )
