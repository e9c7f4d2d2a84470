"""Prometheus metrics of the delivery engine (prometheus-client; see ``tracker.metrics``).

Counted where it happens, in memory (no query of its own):

- ``postbacks_deliveries_total{outcome, kind, traffic_source}``: recorded attempt results by
  what became of the delivery: ``delivered``, ``retry`` (scheduled again) or ``failed``.
- ``postbacks_attempt_duration_seconds{kind}``: how long each recorded attempt took.
- ``postbacks_delivery_lag_seconds{event_type}``: from the delivery's creation (the event's
  transaction: the conversion, the click) to the end of its successful attempt; a rule's
  delay is part of it.
- ``postbacks_claimed_total``: deliveries claimed for an attempt by the dispatchers.
- ``postbacks_reclaimed_total``: deliveries taken back from lost workers by the sweeper.

Read at scrape time by :class:`StatusCollector`, a few queries on partial indexes
(:mod:`postbacks.status`): the due backlog, the oldest due delivery's age, deliveries being
sent, live workers, failing rules, and each periodic task's last run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db import DatabaseError
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from postbacks import status
from postbacks.claims import Claimed
from postbacks.models import Delivery
from postbacks.transports import Result
from tracker import health

logger = logging.getLogger(__name__)

DELIVERIES = Counter(
    "postbacks_deliveries",
    "Recorded attempt results, by what became of the delivery (delivered, retry, failed).",
    ["outcome", "kind", "traffic_source"],
)
ATTEMPT_SECONDS = Histogram(
    "postbacks_attempt_duration_seconds",
    "Duration of each recorded postback attempt (connect to answer read).",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAG_SECONDS = Histogram(
    "postbacks_delivery_lag_seconds",
    "From the event (delivery created) to the end of its successful attempt; rule delays included.",
    ["event_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400),
)
CLAIMED = Counter("postbacks_claimed", "Deliveries claimed by a dispatcher for an attempt.")
RECLAIMED = Counter("postbacks_reclaimed", "Deliveries taken back from lost workers.")

OUTCOMES = {
    Delivery.Status.DELIVERED: "delivered",
    Delivery.Status.SCHEDULED: "retry",
    Delivery.Status.FAILED: "failed",
}


def attempt_recorded(
    delivery: Claimed, new_status: str, result: Result, started_at: datetime
) -> None:
    """Count one recorded attempt of ``delivery`` that moved it to ``new_status``."""
    outcome = OUTCOMES.get(Delivery.Status(new_status), new_status)
    DELIVERIES.labels(outcome, delivery.kind, delivery.traffic_source).inc()
    ATTEMPT_SECONDS.labels(delivery.kind).observe(result.duration_ms / 1000)
    created = health.cursor_timestamp(delivery.created_at)
    if outcome == "delivered" and created is not None:
        ended = started_at + timedelta(milliseconds=result.duration_ms)
        LAG_SECONDS.labels(delivery.event_type).observe(max(0.0, (ended - created).total_seconds()))


class StatusCollector(Collector):
    """Gauges computed at scrape time from the database (see :mod:`postbacks.status`).

    ``postbacks_status_up`` is 0 when the queries failed (the database is down); the other
    gauges are then left out rather than reported as zero.
    """

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        try:
            backlog = status.backlog(now)
            workers = status.workers(now)
            rules = status.failing_rules()
            runs = health.task_runs()
        except DatabaseError:
            logger.warning("Metrics: status figures not read", exc_info=True)
            yield _gauge("postbacks_status_up", "1 when the status figures were read.", 0)
            return
        yield _gauge("postbacks_status_up", "1 when the status figures were read.", 1)
        yield _gauge("postbacks_due_backlog", "Deliveries scheduled and due now.", backlog.due)
        yield _gauge(
            "postbacks_oldest_due_age_seconds",
            "How long the oldest due delivery has been due (0 when none is).",
            backlog.oldest_due_age(now),
        )
        yield _gauge(
            "postbacks_scheduled", "Deliveries waiting (due or not yet).", backlog.scheduled
        )
        yield _gauge("postbacks_sending", "Deliveries being sent now.", backlog.sending)
        live = [worker for worker in workers if worker.alive]
        yield _gauge("postbacks_workers_live", "Dispatcher processes beating.", len(live))
        if workers:
            yield _gauge(
                "postbacks_worker_heartbeat_age_seconds",
                "Age of the newest dispatcher heartbeat.",
                min(worker.heartbeat_age(now) for worker in workers),
            )
        yield _gauge(
            "postbacks_rules_failing",
            "Active rules whose last deliveries failed (consecutive failures > 0).",
            sum(1 for rule in rules if rule.is_active),
        )
        yield _gauge(
            "postbacks_rules_needing_attention",
            "Rules deactivated automatically and not yet acknowledged.",
            sum(1 for rule in rules if rule.needs_attention),
        )
        last = GaugeMetricFamily(
            "tracker_task_last_run_timestamp_seconds",
            "When each periodic task of the beat schedule last ended (Unix time).",
            labels=["task", "state"],
        )
        for run in runs:
            last.add_metric([run.name, run.state], run.finished_at.timestamp())
        yield last


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
