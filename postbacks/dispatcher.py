"""The batch dispatcher: claim due deliveries, send them concurrently, record in bulk.

A Celery message (``postbacks.dispatch``) only wakes the dispatcher of a worker process;
the dispatcher then loops until nothing is due:

1. **Claim** up to as many due deliveries as it has free send slots, oldest ``due_at``
   first, with one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``
   (PostgreSQL; SQLite serialises writers and needs no row locks). Each claim sets a lease
   of timeout + ``POSTBACKS_LEASE_MARGIN_SECONDS`` and the process's worker name.
2. **Send** each on the process's event loop (:mod:`postbacks.http_async`, aiohttp) or,
   with ``POSTBACKS_DISPATCH_CLIENT=requests`` or an egress proxy, on a thread pool with
   keep-alive ``requests`` sessions: ``POSTBACKS_DISPATCH_THREADS`` in flight; at most
   ``POSTBACKS_HOST_CONCURRENCY`` requests per destination host at once, so one slow
   traffic source cannot take every slot. Each attempt runs under one
   wall-clock deadline (its timeout), shorter than its lease.
3. **Record** finished attempts in one transaction: the rows still owned (status
   ``sending``, same attempt number, same worker) get their new states with one
   conditional UPDATE and their Attempt rows with one multi-row INSERT. A result for
   a delivery the sweeper has taken back is dropped (its lost attempt is already logged).
4. **Auto-disable**, in the same transaction: one UPDATE per batch moves each rule's
   ``consecutive_failures`` (a delivery that ends ``failed`` adds one, one that ends
   ``delivered`` resets it; retries in between and test deliveries do not count). A rule
   whose count reaches its ``disable_after_failures``, or whose destination answered
   410 Gone, is deactivated, flagged ``needs_attention`` and its waiting deliveries are
   cancelled.

A maintenance thread of each worker process writes its :class:`~postbacks.models.Worker`
row every ``POSTBACKS_HEARTBEAT_SECONDS`` and runs the sweeper every
``POSTBACKS_SWEEP_SECONDS`` (:meth:`Dispatcher.start_maintenance`): the sweeper takes back
the deliveries of a silent worker, whatever the task slots are doing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from campaigns.models import TrafficSource
from postbacks import http_async, metrics, wakeup
from postbacks.answers import storable
from postbacks.claims import (
    CLAIM_SQL,
    CLAIMED_COLUMNS,
    GONE_REASON,
    LEASE_SQL,
    RECORD_CASTS,
    RECORD_SQL,
    ROW_LOCK_SQL,
    SECRETS_SQL,
    SOURCE_SQL,
    STREAK_CASTS,
    STREAK_LOCK_SQL,
    STREAK_SQL,
    Claimed,
    Finished,
    Streak,
)
from postbacks.masking import mask_secrets
from postbacks.models import Attempt, Delivery, PostbackRule, Worker
from postbacks.recorder import Recorder
from postbacks.services import (
    Transition,
    deliveries_sweep,
    next_state,
    rules_cache_clear,
    wake,
)
from postbacks.transports import (
    HttpTransport,
    Outcome,
    Result,
    get_transport,
)
from tracker import rows

logger = logging.getLogger("postbacks.dispatcher")
# The Celery queue of ``postbacks.dispatch`` wake-ups; it carries nothing else.
WAKE_QUEUE = "postbacks"


def send(delivery: Claimed) -> tuple[Result, datetime]:
    """Send one claimed delivery through its transport (runs on a pool thread, no DB)."""
    started_at = timezone.now()
    transport = get_transport(delivery.kind)
    result = transport.send(
        delivery.request(), timeout=delivery.timeout_seconds, secrets=delivery.secrets
    )
    return result, started_at


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
        self.use_loop = (
            settings.POSTBACKS_DISPATCH_CLIENT == "aiohttp" and not settings.POSTBACKS_HTTP_PROXY
        )
        self.client: http_async.Client | None = None
        self.in_flight = 0
        self.completed: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self.per_host: Counter[str] = Counter()
        self._running = threading.Lock()
        self._poked = threading.Event()
        self._maintenance: threading.Thread | None = None

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
        still recorded, and a dispatcher stopped with deliveries still due wakes another.
        When another thread of this process is already dispatching, it is poked to look
        again and this call returns at once.
        """
        if not self._running.acquire(blocking=False):
            self._poked.set()
            return {"sent": 0, "recorded": 0}
        try:
            self.beat()  # the maintenance thread beats too; this row may have been removed
            return self._loop(max_seconds or settings.POSTBACKS_DISPATCH_MAX_SECONDS)
        finally:
            self._running.release()
            # Kept for the next wake-up (CELERY_DB_REUSE_MAX), unless it broke.
            if connection.errors_occurred and not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()

    def _loop(self, max_seconds: float) -> dict[str, int]:
        """Claim while slots are free; a recorder thread writes the results meanwhile.

        Claims happen when nothing is in flight, when a tenth of the slots are free and the
        last claim got all it asked for, or every ``POSTBACKS_DISPATCH_POLL_SECONDS``.
        Finished attempts go to :class:`Recorder`, which writes them in batches on its own
        database connection, so claiming never waits for recording.

        Sharing a backlog: after the first claim that leaves deliveries due, one wake-up is
        published past the coalescing flag, so an idle dispatcher (another process, another
        machine) joins; it does the same, until claims stop leaving work behind.

        Going idle: with nothing in flight, the loop keeps claiming for
        ``POSTBACKS_DISPATCH_LINGER_SECONDS`` (a steady stream costs no wake-ups), then
        lowers the wake-up flag and claims once more (:mod:`postbacks.wakeup`).
        """
        stop_claiming = time.monotonic() + max_seconds
        poll = settings.POSTBACKS_DISPATCH_POLL_SECONDS
        linger = settings.POSTBACKS_DISPATCH_LINGER_SECONDS
        batch = settings.POSTBACKS_DISPATCH_BATCH
        refill = max(1, self.threads // 10)
        next_claim = 0.0
        idle_since: float | None = None
        starved = False
        freed = 0
        shared = False
        sent = 0
        recorder = Recorder(self, poll, batch)
        try:
            while True:
                claimed = 0
                now = time.monotonic()
                free = self.threads - self.in_flight
                ready = not self.in_flight or (free >= refill and not starved) or now >= next_claim
                if free and now < stop_claiming and ready:
                    self._poked.clear()
                    wanted = min(free, batch)
                    for delivery in self.claim(wanted):
                        self.per_host[delivery.host] += 1
                        self.in_flight += 1
                        self._start(delivery)
                        claimed += 1
                    sent += claimed
                    starved = claimed < wanted  # nothing more due, or its hosts at their cap
                    freed = 0
                    next_claim = now + poll
                    full = claimed == wanted or claimed >= self.host_cap
                    if full and not shared and self._more_due():
                        shared = wake(coalesce=False)
                if self.in_flight or claimed:
                    idle_since = None
                elif now >= stop_claiming:
                    if self._more_due():
                        wake(coalesce=False)  # this task ends: another takes over
                    break
                elif self._poked.is_set():
                    idle_since = None  # claims on the next turn
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= linger:
                    wakeup.flag_lower()
                    if self._more_due():
                        idle_since = None
                        continue
                    break
                if not self.in_flight:
                    self._poked.wait(poll)
                    continue
                returned = self._collect(poll)
                for item in returned:
                    recorder.add(item)
                # Slots came back, some of them perhaps of the hosts at their cap: after a
                # starved claim, claim again once a tenth of the slots did (or on the poll),
                # not for every single one (at 50 in flight to one host, a claim per result).
                freed += len(returned)
                if freed >= refill:
                    starved = False
        finally:
            recorded = recorder.close()
        return {"sent": sent, "recorded": recorded}

    @staticmethod
    def _more_due() -> bool:
        """Whether any delivery is due now (one index probe of ``delivery_due_idx``)."""
        return Delivery.objects.due(timezone.now()).exists()

    def _start(self, delivery: Claimed) -> None:
        """Send one claimed delivery: on the event loop (HTTP destinations, no egress
        proxy, ``POSTBACKS_DISPATCH_CLIENT`` "aiohttp"), else on a pool thread."""
        transport = get_transport(delivery.kind)
        if self.use_loop and isinstance(transport, HttpTransport):
            if self.client is None:
                self.client = http_async.client(self.threads, self.host_cap)
            self.client.submit(self._send_async(transport, delivery))
        else:
            self.pool.submit(self._send, delivery)

    async def _send_async(self, transport: HttpTransport, delivery: Claimed) -> None:
        """Event loop: send one delivery and hand the result to the dispatcher thread."""
        started_at = timezone.now()
        assert self.client is not None
        result = await transport.send_async(
            self.client, delivery.request(), delivery.timeout_seconds, delivery.secrets
        )
        self.completed.put(Finished(delivery, result, started_at))

    def _send(self, delivery: Claimed) -> None:
        """Pool thread: send one delivery and hand the result to the dispatcher thread."""
        try:
            result, started_at = send(delivery)
        except Exception as exc:  # send() never raises; should it, the attempt is retried
            logger.exception("Postback %s: unexpected error", delivery.public_id)
            result = Result(Outcome.RETRY, error=f"Unexpected error: {type(exc).__name__}: {exc}")
            started_at = timezone.now()
        self.completed.put(Finished(delivery, result, started_at))

    def _collect(self, timeout: float) -> list[Finished]:
        """Finished attempts: wait up to ``timeout`` s for one, then take all that are there."""
        items = []
        try:
            items.append(self.completed.get(timeout=timeout))
            while True:
                items.append(self.completed.get_nowait())
        except queue.Empty:
            pass
        for item in items:
            self.in_flight -= 1
            self.per_host[item.delivery.host] -= 1
        return items

    # --- claim and record ----------------------------------------------------------------

    def claim(self, limit: int) -> list[Claimed]:
        """Claim up to ``limit`` due deliveries, oldest due first, within the host caps.

        Requests already in flight count against their host's cap
        (``POSTBACKS_HOST_CONCURRENCY``); a host at its cap is skipped entirely.
        """
        busy = [(host, n) for host, n in self.per_host.items() if n > 0]
        full = [host for host, n in busy if n >= self.host_cap]
        vendor = connection.vendor
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        sql = CLAIM_SQL.format(
            scheduled=Delivery.Status.SCHEDULED.value,
            sending=Delivery.Status.SENDING.value,
            busy=", ".join(["(NULL, 0)"] + ["(%s, %s)"] * len(busy)),
            table=Delivery._meta.db_table,
            lease=LEASE_SQL[vendor],
            lock=ROW_LOCK_SQL[vendor],
            exclude=f"AND host NOT IN ({', '.join(['%s'] * len(full))})" if full else "",
            columns=", ".join(CLAIMED_COLUMNS),
            source=SOURCE_SQL.format(
                sources=TrafficSource._meta.db_table, table=Delivery._meta.db_table
            ),
            secrets=SECRETS_SQL.format(
                rules=PostbackRule._meta.db_table, table=Delivery._meta.db_table
            ),
        )
        params: list[Any] = [value for pair in busy for value in pair]
        params += [self.name, now, settings.POSTBACKS_LEASE_MARGIN_SECONDS, now, now, *full]
        params += [limit * 4, self.host_cap, limit, now]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            claimed = [Claimed.from_row(row) for row in cursor.fetchall()]
        metrics.CLAIMED.inc(len(claimed))
        return sorted(claimed, key=lambda item: (item.due_at, item.pk))

    def record(self, finished: list[Finished]) -> int:
        """Write the attempts and new states of deliveries this worker still owns.

        One transaction per batch (see :meth:`_record`). Should the batch fail (a row the
        database refuses, a dropped connection), each result is written alone, and one
        that still fails is written once more without the answer's body: one bad row never
        costs the others their result, and a result the worker holds is never dropped while
        the database can take any row. Returns how many were recorded.
        """
        now = timezone.now()
        moves: dict[int, tuple[Finished, Transition]] = {}
        for item in finished:
            moves[item.delivery.pk] = (
                item,
                next_state(
                    attempt_number=item.delivery.attempt_count,
                    max_attempts=item.delivery.max_attempts,
                    retry_base_seconds=item.delivery.retry_base_seconds,
                    result=item.result,
                    now=now,
                ),
            )
        try:
            return self._record(moves, now)
        except DatabaseError:
            if len(moves) == 1 and not self._reconnect():
                raise
            logger.exception("Could not record %d attempt(s) together: one by one", len(moves))
        recorded = 0
        for pk, move in moves.items():
            for attempt in (move, _without_answer(move)):
                try:
                    recorded += self._record({pk: attempt}, now)
                    break
                except DatabaseError:
                    logger.exception("Postback %s: result not recorded", move[0].delivery.public_id)
                    self._reconnect()
        return recorded

    @staticmethod
    def _reconnect() -> bool:
        """Drop this thread's connection if it broke; True when it did (worth a retry)."""
        if connection.is_usable():
            return False
        connection.close()
        return True

    def _record(self, moves: dict[int, tuple[Finished, Transition]], now: datetime) -> int:
        """The batch's one transaction: one conditional ``UPDATE ... FROM (VALUES ...)
        RETURNING id`` moves the deliveries still ``sending`` under this worker and attempt
        number, one multi-row INSERT logs the attempts of exactly those, one UPDATE counts
        the rules' failures in a row (see :meth:`_auto_disable`). Late results of
        deliveries the sweeper took back are dropped and logged."""
        with transaction.atomic():
            owned = self._write_states(moves, now)
            attempts = [
                Attempt.logged(
                    delivery_id=pk,
                    number=item.delivery.attempt_count,
                    started_at=item.started_at,
                    method=item.delivery.method,
                    url=item.delivery.url,
                    outcome=move.outcome,
                    error=move.error,
                    result=item.result,
                )
                for pk, (item, move) in moves.items()
                if pk in owned
            ]
            rows.insert(attempts)
            disabled = self._auto_disable(moves, owned, now)
            if disabled:
                transaction.on_commit(rules_cache_clear)
            waits = [
                (move.due_at - now).total_seconds()
                for pk, (_item, move) in moves.items()
                if pk in owned and move.due_at
            ]
            if waits and min(waits) <= settings.POSTBACKS_COUNTDOWN_MAX_SECONDS:
                transaction.on_commit(lambda: wake(min(waits)))
        for pk in moves.keys() - owned:
            logger.warning(
                "Postback %s attempt %d: late result dropped (taken back by the sweeper)",
                moves[pk][0].delivery.public_id, moves[pk][0].delivery.attempt_count,
            )  # fmt: skip
        for rule_id, reason in disabled.items():
            logger.warning("Rule %s deactivated automatically: %s", rule_id, reason)
        for (item, move), attempt in zip(
            (moves[a.delivery_id] for a in attempts), attempts, strict=True
        ):
            metrics.attempt_recorded(item.delivery, move.status, item.result, item.started_at)
            logger.info(
                "Postback %s attempt %d: %s %s -> %s in %d ms",
                item.delivery.public_id, attempt.number, attempt.outcome, attempt.url,
                attempt.status_code or attempt.error, attempt.duration_ms,
            )  # fmt: skip
        return len(attempts)

    def _write_states(
        self, moves: dict[int, tuple[Finished, Transition]], now: datetime
    ) -> set[int]:
        """The one UPDATE of :meth:`record`; returns the ids it changed (still owned)."""
        ops = connection.ops
        casts = RECORD_CASTS[connection.vendor]
        row = "(" + ", ".join(cast.format("%s") for cast in casts) + ")"
        params: list[Any] = []
        for pk, (item, move) in moves.items():
            params += [
                pk,
                item.delivery.attempt_count,
                move.status,
                ops.adapt_datetimefield_value(move.due_at),
                ops.adapt_datetimefield_value(move.delivered_at),
                item.result.status_code,
                storable(mask_secrets(move.error)),
            ]
        sql = RECORD_SQL.format(
            table=Delivery._meta.db_table,
            rows=", ".join([row] * len(moves)),
            sending=Delivery.Status.SENDING.value,
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, ops.adapt_datetimefield_value(now), self.name])
            return {pk for (pk,) in cursor.fetchall()}

    def _auto_disable(
        self, moves: dict[int, tuple[Finished, Transition]], owned: set[int], now: datetime
    ) -> dict[int, str]:
        """Count each rule's failed deliveries in a row, set-based; deactivate the rules
        that reached ``disable_after_failures`` or got a 410 Gone. Returns ``{rule id:
        reason}`` of the rules deactivated now.

        A delivery counts when it ends ``delivered`` (resets the count) or ``failed`` (adds
        one), in the order the attempts finished; a retry in between does not count, nor
        does a test delivery. The reason names the last error, e.g. "Deactivated after 5
        failed deliveries in a row; last error: HTTP 500".
        """
        streaks: dict[int, Streak] = {}
        for pk, (item, move) in moves.items():
            delivery = item.delivery
            if pk not in owned or delivery.rule_id is None or delivery.is_test:
                continue
            if move.status == Delivery.Status.DELIVERED:
                streak = streaks.setdefault(delivery.rule_id, Streak())
                streak.reset, streak.failures = True, 0
            elif move.status == Delivery.Status.FAILED:
                streak = streaks.setdefault(delivery.rule_id, Streak())
                streak.failures += 1
                streak.last_error = mask_secrets(item.result.error or move.error)
                streak.gone = streak.gone or item.result.status_code == 410
        if not streaks:
            return {}
        casts = STREAK_CASTS[connection.vendor]
        row = "(" + ", ".join(cast.format("%s") for cast in casts) + ")"
        params: list[Any] = []
        for rule_id in sorted(streaks):
            streak = streaks[rule_id]
            params += [rule_id, int(streak.reset), streak.failures, int(streak.gone)]
        table = PostbackRule._meta.db_table
        sql = STREAK_SQL.format(
            table=table,
            rows=", ".join([row] * len(streaks)),
            lock=STREAK_LOCK_SQL[connection.vendor],
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            counts = cursor.fetchall()
        disabled: dict[int, str] = {}
        for rule_id, count, limit, active in counts:
            streak = streaks[rule_id]
            if not active or not (streak.failures or streak.gone):
                continue
            if streak.gone:
                disabled[rule_id] = GONE_REASON
            elif limit and count >= limit:
                disabled[rule_id] = (
                    f"Deactivated after {count} failed deliveries in a row; "
                    f"last error: {streak.last_error or 'unknown'}"
                )
        for rule_id, reason in list(disabled.items()):
            if not rule_deactivate_automatically(rule_id, reason, now):
                del disabled[rule_id]
        return disabled

    # --- heartbeat and sweeper ----------------------------------------------------------

    def beat(self) -> None:
        """Write this process's heartbeat (``Worker.heartbeat_at = now``)."""
        Worker.objects.update_or_create(name=self.name, defaults={"heartbeat_at": timezone.now()})

    def start_maintenance(self) -> None:
        """Start this process's maintenance thread (once): it beats every
        ``POSTBACKS_HEARTBEAT_SECONDS`` and sweeps every ``POSTBACKS_SWEEP_SECONDS``
        (:func:`postbacks.services.deliveries_sweep`: reclaim the deliveries of lost
        workers, wake a dispatcher when something is due). Being a thread of its own, the
        sweep never waits for a free task slot, however long the dispatch runs are, and
        needs no beat process."""
        with self._instance_lock:
            if self._maintenance is not None and self._maintenance.is_alive():
                return
            self._maintenance = threading.Thread(
                target=self._maintain, name="maintenance", daemon=True
            )
            self._maintenance.start()

    def _maintain(self) -> None:
        beat_every = settings.POSTBACKS_HEARTBEAT_SECONDS
        sweep_every = settings.POSTBACKS_SWEEP_SECONDS
        next_beat = next_sweep = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat_every
                self._guarded(self.beat, "Heartbeat not written")
            if now >= next_sweep:
                next_sweep = now + sweep_every
                self._guarded(deliveries_sweep, "Sweep not done")
            time.sleep(max(0.05, min(next_beat, next_sweep) - time.monotonic()))

    @staticmethod
    def _guarded(work: Callable[[], object], failure: str) -> None:
        """Run one round of maintenance; a failure is logged and the next round starts on a
        fresh database connection (the database may be restarting)."""
        try:
            work()
        except Exception:
            logger.warning(failure, exc_info=True)
            connection.close()


def _without_answer(move: tuple[Finished, Transition]) -> tuple[Finished, Transition]:
    """``move`` with the answer's body and the error reduced to ASCII: the last try to
    record a result whose row the database refused."""
    item, transition = move
    error = transition.error.encode("ascii", "backslashreplace").decode("ascii")
    result = dataclasses.replace(
        item.result,
        response_body="[answer not stored: the database refused it]",
        error=item.result.error.encode("ascii", "backslashreplace").decode("ascii"),
    )
    return (
        dataclasses.replace(item, result=result),
        dataclasses.replace(transition, error=error),
    )


def rule_deactivate_automatically(rule_id: int, reason: str, now: datetime) -> bool:
    """Deactivate an active rule for ``reason``, flag it for attention and cancel its
    waiting deliveries (``last_error`` says why). False when it was no longer active."""
    updated = PostbackRule.objects.filter(pk=rule_id, is_active=True).update(
        is_active=False, needs_attention=True, disabled_at=now, disabled_reason=reason
    )
    if updated:
        Delivery.objects.filter(rule_id=rule_id).cancel(
            f"the rule was deactivated automatically. {reason}"
        )
    return bool(updated)
