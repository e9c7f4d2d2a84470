"""The batch dispatcher: claim due deliveries, send them concurrently, record in bulk.

A Celery message (``postbacks.dispatch``) only wakes the dispatcher of a worker process;
the dispatcher then loops until nothing is due:

1. **Claim** up to as many due deliveries as it has free send slots, oldest ``due_at``
   first, with one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
   (PostgreSQL; SQLite serialises writers and needs no row locks). Each claim sets a lease
   of timeout + ``POSTBACKS_LEASE_MARGIN_SECONDS`` and the process's worker name.
2. **Send** each on a bounded thread pool (``POSTBACKS_DISPATCH_THREADS``) with keep-alive
   sessions; at most ``POSTBACKS_HOST_CONCURRENCY`` requests per destination host at once,
   so one slow traffic source cannot take every slot. Each attempt runs under one
   wall-clock deadline (its timeout), shorter than its lease.
3. **Record** finished attempts in one transaction: the rows still owned (status
   ``sending``, same attempt number, same worker) are locked, their new states written
   with one ``bulk_update`` and their Attempt rows with one ``bulk_create``. A result for
   a delivery the sweeper has taken back is dropped (its lost attempt is already logged).

A heartbeat thread writes the process's :class:`~postbacks.models.Worker` row every
``POSTBACKS_HEARTBEAT_SECONDS``; the sweeper takes back the deliveries of a silent worker.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from postbacks.masking import mask_secrets
from postbacks.models import Attempt, Delivery, Worker
from postbacks.services import next_state, wake
from postbacks.transports import Outcome, PreparedRequest, Result, get_transport

logger = logging.getLogger("postbacks.dispatcher")

# now + (timeout + margin) seconds, per database: the lease of a claimed delivery.
LEASE_SQL = {
    "postgresql": "%s + make_interval(secs => timeout_seconds + %s)",
    "sqlite": "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s,"
    " '+' || (timeout_seconds + %s) || ' seconds')",
}
ROW_LOCK_SQL = {"postgresql": "FOR UPDATE SKIP LOCKED", "sqlite": ""}
CLAIM_SQL = """
UPDATE {table} SET status = 'sending', attempt_count = attempt_count + 1, claimed_by = %s,
    lease_expires_at = {lease}, updated_at = %s
WHERE status = 'scheduled' AND id IN (
    SELECT id FROM (
        SELECT id, due_at, ROW_NUMBER() OVER (PARTITION BY host ORDER BY due_at, id) AS nth
        FROM (
            SELECT id, host, due_at FROM {table}
            WHERE status = 'scheduled' AND due_at <= %s {exclude}
            ORDER BY due_at, id LIMIT %s {lock}
        ) AS due
    ) AS ranked
    WHERE nth <= %s ORDER BY due_at, id LIMIT %s
)
RETURNING *
"""
RECORDED_FIELDS = [
    "status",
    "due_at",
    "delivered_at",
    "last_status_code",
    "last_error",
    "lease_expires_at",
    "claimed_by",
    "updated_at",
]


@dataclass
class Finished:
    """One attempt that came back: the claimed delivery, its result, when it started."""

    delivery: Delivery
    result: Result
    started_at: datetime


def send(delivery: Delivery) -> tuple[Result, datetime]:
    """Send one claimed delivery through its transport (runs on a pool thread, no DB)."""
    started_at = timezone.now()
    request = PreparedRequest(delivery.method, delivery.url, delivery.body, delivery.headers)
    return get_transport(delivery.kind).send(request, timeout=delivery.timeout_seconds), started_at


class Dispatcher:
    """The dispatcher of one worker process (see the module docstring)."""

    _instance: Dispatcher | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.name = f"{socket.gethostname()}:{self.pid}:{secrets.token_hex(3)}"[:100]
        self.threads = settings.POSTBACKS_DISPATCH_THREADS
        self.host_cap = settings.POSTBACKS_HOST_CONCURRENCY
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="postback")
        self.in_flight: dict[Future, Delivery] = {}
        self.per_host: Counter[str] = Counter()
        self._running = threading.Lock()
        self._poked = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @classmethod
    def for_process(cls) -> Dispatcher:
        """This process's dispatcher (a new one after a fork)."""
        with cls._instance_lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = cls()
            return cls._instance

    # --- the loop ------------------------------------------------------------------------

    def run(self, max_seconds: float | None = None) -> dict[str, int]:
        """Dispatch until nothing is due and nothing is in flight; returns counts.

        Claims stop after ``max_seconds`` (default ``POSTBACKS_DISPATCH_MAX_SECONDS``) so a
        Celery task ends and the process takes further wake-ups; what is in flight then is
        still recorded. When another thread of this process is already dispatching, it is
        poked to look again and this call returns at once.
        """
        if not self._running.acquire(blocking=False):
            self._poked.set()
            return {"sent": 0, "recorded": 0}
        try:
            self._beat_start()
            return self._loop(max_seconds or settings.POSTBACKS_DISPATCH_MAX_SECONDS)
        finally:
            self._running.release()
            if not connection.in_atomic_block:
                connection.close()  # back to the pool while idle

    def _loop(self, max_seconds: float) -> dict[str, int]:
        stop_claiming = time.monotonic() + max_seconds
        poll = settings.POSTBACKS_DISPATCH_POLL_SECONDS
        sent = recorded = 0
        while True:
            claimed = 0
            free = self.threads - len(self.in_flight)
            if free > 0 and time.monotonic() < stop_claiming:
                self._poked.clear()
                for delivery in self.claim(min(free, settings.POSTBACKS_DISPATCH_BATCH)):
                    self.per_host[delivery.host] += 1
                    self.in_flight[self.pool.submit(send, delivery)] = delivery
                    claimed += 1
                sent += claimed
            if not self.in_flight:
                if claimed or self._poked.is_set():
                    continue
                return {"sent": sent, "recorded": recorded}
            done, _pending = wait(list(self.in_flight), timeout=poll, return_when=FIRST_COMPLETED)
            if done:
                recorded += self.record([self._finished(future) for future in done])

    def _finished(self, future: Future) -> Finished:
        delivery = self.in_flight.pop(future)
        self.per_host[delivery.host] -= 1
        try:
            result, started_at = future.result()
        except Exception as exc:  # send() never raises; should it, the attempt is retried
            logger.exception("Postback %s: unexpected error", delivery.pk)
            result = Result(Outcome.RETRY, error=f"Unexpected error: {type(exc).__name__}: {exc}")
            started_at = timezone.now()
        return Finished(delivery, result, started_at)

    # --- claim and record ----------------------------------------------------------------

    def claim(self, limit: int) -> list[Delivery]:
        """Claim up to ``limit`` due deliveries, oldest due first, within the host caps."""
        full = [host for host, n in self.per_host.items() if n >= self.host_cap]
        vendor = connection.vendor
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        sql = CLAIM_SQL.format(
            table=Delivery._meta.db_table,
            lease=LEASE_SQL[vendor],
            lock=ROW_LOCK_SQL[vendor],
            exclude=f"AND host NOT IN ({', '.join(['%s'] * len(full))})" if full else "",
        )
        params = [self.name, now, settings.POSTBACKS_LEASE_MARGIN_SECONDS, now, now, *full]
        params += [limit * 4, self.host_cap, limit]
        claimed = list(Delivery.objects.raw(sql, params))
        claimed.sort(key=lambda d: (d.due_at, d.pk))
        keep, release = [], []
        taken = Counter(self.per_host)
        for delivery in claimed:
            if taken[delivery.host] >= self.host_cap:
                release.append(delivery.pk)
            else:
                taken[delivery.host] += 1
                keep.append(delivery)
        if release:
            self._release(release)
        return keep

    def _release(self, ids: list[int]) -> None:
        """Hand back claimed deliveries that were not sent (their host is at its cap)."""
        Delivery.objects.filter(pk__in=ids, claimed_by=self.name).in_flight().update(
            status=Delivery.Status.SCHEDULED,
            attempt_count=F("attempt_count") - 1,
            lease_expires_at=None,
            claimed_by="",
        )

    def record(self, finished: list[Finished]) -> int:
        """Write the attempts and new states of deliveries this worker still owns.

        Returns how many were recorded; late results of deliveries the sweeper took back
        are dropped and logged.
        """
        now = timezone.now()
        ids = [item.delivery.pk for item in finished]
        soonest: float | None = None
        with transaction.atomic():
            owned = dict(
                Delivery.objects.select_for_update()
                .filter(pk__in=ids, claimed_by=self.name)
                .in_flight()
                .values_list("pk", "attempt_count")
            )
            updates, attempts = [], []
            for item in finished:
                delivery, result = item.delivery, item.result
                if owned.get(delivery.pk) != delivery.attempt_count:
                    logger.warning(
                        "Postback %s attempt %d: late result dropped (taken back by the sweeper)",
                        delivery.pk,
                        delivery.attempt_count,
                    )
                    continue
                move = next_state(
                    attempt_number=delivery.attempt_count,
                    max_attempts=delivery.max_attempts,
                    retry_base_seconds=delivery.retry_base_seconds,
                    result=result,
                    now=now,
                )
                delivery.status = move.status
                delivery.due_at = move.due_at or delivery.due_at
                delivery.delivered_at = move.delivered_at
                delivery.last_status_code = result.status_code
                delivery.last_error = mask_secrets(move.error)
                delivery.lease_expires_at = None
                delivery.claimed_by = ""
                delivery.updated_at = now
                updates.append(delivery)
                attempts.append(
                    Attempt(
                        delivery=delivery,
                        number=delivery.attempt_count,
                        started_at=item.started_at,
                        method=delivery.method,
                        url=mask_secrets(delivery.url),
                        status_code=result.status_code,
                        response_body=result.response_body,
                        error=delivery.last_error,
                        duration_ms=result.duration_ms,
                        outcome=move.outcome,
                    )
                )
                if move.due_at:
                    wait_seconds = (move.due_at - now).total_seconds()
                    soonest = wait_seconds if soonest is None else min(soonest, wait_seconds)
            if updates:
                Delivery.objects.bulk_update(updates, RECORDED_FIELDS)
                Attempt.objects.bulk_create(attempts)
            if soonest is not None and soonest <= settings.POSTBACKS_COUNTDOWN_MAX_SECONDS:
                transaction.on_commit(lambda: wake(soonest))
        for attempt in attempts:
            logger.info(
                "Postback %s attempt %d: %s %s -> %s in %d ms",
                attempt.delivery_id, attempt.number, attempt.outcome, attempt.url,
                attempt.status_code or attempt.error, attempt.duration_ms,
            )  # fmt: skip
        return len(attempts)

    # --- heartbeat -----------------------------------------------------------------------

    def beat(self) -> None:
        """Write this process's heartbeat (``Worker.heartbeat_at = now``)."""
        Worker.objects.update_or_create(name=self.name, defaults={"heartbeat_at": timezone.now()})

    def _beat_start(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self.beat()  # before the first claim: the sweeper must know this worker is alive
        self._heartbeat = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat_loop(self) -> None:
        while True:
            time.sleep(settings.POSTBACKS_HEARTBEAT_SECONDS)
            try:
                self.beat()
            except Exception:
                logger.warning("Heartbeat not written", exc_info=True)
            finally:
                connection.close()
