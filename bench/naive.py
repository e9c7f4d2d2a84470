"""The naive design the benchmark compares against: one plain task per postback.

Its own Celery app on the same Redis and its own queue, Celery's defaults otherwise (prefork
pool, one process per core, early acks). Each task calls ``requests.get(url)`` with no
session and logs the try as one ``postbacks.models.Attempt`` row, the same log table the
pipeline writes, so both designs log every attempt the same way. It keeps no delivery state:
no claim, no lease, no retry. Its worker runs with ``bench.naive_settings`` (Django's
default connection handling, no pool).

Worker: ``celery -A bench.naive worker -Q naive_postbacks`` from the project root.
"""

from __future__ import annotations

import os
import time

import django
import requests
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.naive_settings")
django.setup()

from django.utils import timezone  # noqa: E402

from postbacks.models import Attempt  # noqa: E402

QUEUE = "naive_postbacks"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/13")
BODY_MAX = 2048

app = Celery("naive", broker=REDIS_URL, set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="naive.fire")
def fire(delivery_id: int, url: str) -> str:
    """GET ``url`` once and log the try; returns the outcome."""
    started_at = timezone.now()
    started = time.monotonic()
    status_code: int | None = None
    body = error = ""
    try:
        response = requests.get(url, timeout=10)
        status_code, body = response.status_code, response.text[:BODY_MAX]
        ok = 200 <= response.status_code < 300
        outcome = Attempt.Outcome.DELIVERED if ok else Attempt.Outcome.FAILED
    except requests.RequestException as exc:
        outcome, error = Attempt.Outcome.FAILED, f"{type(exc).__name__}: {exc}"
    Attempt.objects.create(
        delivery_id=delivery_id,
        number=1,
        started_at=started_at,
        method="GET",
        url=url,
        status_code=status_code,
        response_body=body,
        error=error,
        duration_ms=int((time.monotonic() - started) * 1000),
        outcome=outcome,
    )
    return outcome
