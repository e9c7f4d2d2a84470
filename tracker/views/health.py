"""``/health``, ``/ready`` and ``/metrics``: for load balancers, supervisors and Prometheus.

None of them needs a session or a token of the API, none writes to the inbound log, and
``/health`` touches neither the database nor the broker. See README "Health and metrics".
"""

from __future__ import annotations

import hmac
import os
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from postbacks.metrics import StatusCollector
from tracker import health, metrics

STARTED = time.monotonic()


@never_cache
@require_safe
def alive(request: HttpRequest) -> JsonResponse:
    """200 ``{"status": "ok", "pid": ..., "uptime_seconds": ...}``: the process answers."""
    return JsonResponse(
        {"status": "ok", "pid": os.getpid(), "uptime_seconds": round(time.monotonic() - STARTED)}
    )


@never_cache
@require_safe
def ready(request: HttpRequest) -> JsonResponse:
    """200 when the database answers with every migration applied and the broker and Redis
    answer, else 503; each check with its outcome, detail and milliseconds::

        {"status": "unavailable", "failed": ["database", "migrations"],
         "checks": {"database": {"ok": false, "detail": "...", "ms": 3}, ...},
         "beat_last_run": "2026-12-08T01:00:00+00:00"}

    ``beat_last_run``: when a periodic task last ended (null when unknown or the database
    is down; read on the check's own connection). Answers within ``HEALTH_TIMEOUT_SECONDS``
    whatever is down.
    """
    result = health.readiness()
    last = result.beat_last_run
    body = {
        "status": "ok" if result.ok else "unavailable",
        "failed": result.failed,
        "checks": {check.name: check.as_dict() for check in result.checks},
        "beat_last_run": timezone.localtime(last).isoformat() if last else None,
    }
    return JsonResponse(body, status=200 if result.ok else 503)


@never_cache
@require_safe
def prometheus(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus' text format (see :mod:`tracker.metrics`,
    :mod:`postbacks.metrics`). With ``METRICS_TOKEN`` set: ``Authorization: Bearer <token>``
    required (401); else served only when ``METRICS_OPEN`` is true (403 otherwise)."""
    token = settings.METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return JsonResponse(
                {"error": "unauthorized", "detail": "Send Authorization: Bearer <METRICS_TOKEN>."},
                status=401,
            )
    elif not settings.METRICS_OPEN:
        return JsonResponse(
            {"error": "forbidden", "detail": "Set METRICS_TOKEN (or METRICS_OPEN=true)."},
            status=403,
        )
    body = metrics.exposition([StatusCollector()])
    return HttpResponse(body, content_type=metrics.CONTENT_TYPE_LATEST)
