"""Prometheus metrics of the tracker, and the ``/metrics`` exposition (prometheus-client).

Counters live in the process that counts (no query of their own):

- ``tracker_inbound_requests_total{endpoint, outcome}``: inbound conversions as the inbound
  log records them; ``endpoint`` is the channel (s2s, pixel, script, api, upload, admin,
  crm), ``outcome`` the log's (accepted, duplicate, status_changed, unknown_click, ...).
- ``tracker_clicks_total``: clicks recorded.

Multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts:
prometheus-client reads it on import), every web and worker process writes its counters to
files there, and :func:`exposition` merges them (``MultiProcessCollector``). Unset, each
process counts alone and the exposition is the answering process's own registry.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "exposition", "process_exited"]

INBOUND_REQUESTS = Counter(
    "tracker_inbound_requests",
    "Inbound conversion requests as logged, by channel and outcome.",
    ["endpoint", "outcome"],
)
CLICKS = Counter("tracker_clicks", "Clicks recorded.")


class _ProcessRegistry(Collector):
    """This process's default registry, when there is no multiprocess directory."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(collectors: Iterable[Collector] = (), path: str | None = None) -> bytes:
    """The metrics in Prometheus' text format: the counters of every process writing to
    ``path`` (default ``PROMETHEUS_MULTIPROC_DIR``; none: this process's), then
    ``collectors`` (computed now, e.g. the backlog)."""
    path = settings.PROMETHEUS_MULTIPROC_DIR if path is None else path
    registry = CollectorRegistry()
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ProcessRegistry())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


def process_exited(pid: int) -> None:
    """Drop the live gauges of a process that ended (the library's ``mark_process_dead``;
    its counters stay, summed into the totals). Called by gunicorn's ``child_exit`` and
    Celery's ``worker_process_shutdown``; a no-op outside multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        mark_process_dead(pid)


def process_shutdown(pid: int | None = None, **_: object) -> None:
    """Celery ``worker_process_shutdown``: :func:`process_exited` for this process."""
    process_exited(pid or os.getpid())
