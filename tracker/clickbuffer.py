"""The click buffer: ``/c`` records a click without waiting on the database.

A visitor must be redirected even while PostgreSQL is slow, restarting or failing over: a
paid click whose redirect hangs is lost. With a buffer (``TRACKER_CLICK_BUFFER_REDIS_URL``,
default ``REDIS_URL``), :func:`push` puts the click on a Redis stream (``XADD``) together
with a copy under its click ID, in one round trip, and ``/c`` redirects at once. When Redis
cannot be reached either, the click is appended to a local spool file
(``TRACKER_CLICK_SPOOL_DIR``), which the web process moves to the stream once Redis answers.

Writers (:class:`Flusher`, a thread in every Celery worker process) read the stream as a
consumer group, INSERT the clicks in bulk (:func:`write`: ``ON CONFLICT DO NOTHING``, so a
click read twice is stored once) and plan their click postbacks in the same transaction,
for the clicks that transaction inserted only; the entries are acknowledged after COMMIT.
While the database is down they stay in the stream and are written when it is back. A
writer that dies leaves its entries pending: another one claims them after
``TRACKER_CLICK_CLAIM_SECONDS``.

Until a click is written (its copy is deleted then, or expires after
``TRACKER_CLICK_COPY_SECONDS``), :func:`flush_one` finds it by its copy (``/cv``, the pixel, the
API, ``/lp/click``): it is written on demand in the caller's transaction, with the same
answers as for a click already in the table.

What can be lost: a click is in Redis when ``/c`` answers; it survives a Redis restart as
far as Redis persists it (``appendonly yes`` with ``appendfsync everysec``: up to a second of
clicks on a power cut; without persistence, the clicks not yet written). A spooled click
survives the web process's death (written and flushed before the answer) but not a power
cut of its machine (no fsync per click).

Without a buffer URL (the SQLite demo) ``/c`` writes the click itself, as before.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction

from tracker import rows
from tracker.models import Click

logger = logging.getLogger(__name__)

STREAM = "tracker:clicks"
GROUP = "click-writers"
COPY_KEY = "tracker:click:{}"  # the click's copy, read by flush_one until it expires
BATCH = 500

Entry = tuple[bytes, dict[bytes, bytes] | None]
_clients: dict[tuple[int, str, float], redis.Redis] = {}
WRITER_TIMEOUT = 5.0  # seconds: the writers' Redis timeout
_lock = threading.Lock()
# Set: the spool may hold clicks (this process wrote some since it last drained, or, at
# start, a process before it did): the next click that reaches Redis drains it.
_spooled = threading.Event()
_spooled.set()


def enabled() -> bool:
    """Whether clicks go through the buffer (a buffer Redis URL is set)."""
    return bool(settings.TRACKER_CLICK_BUFFER_REDIS_URL)


def _client(timeout: float | None = None) -> redis.Redis:
    """This process's Redis client of the buffer (one per fork and timeout). Default
    ``TRACKER_CLICK_BUFFER_TIMEOUT``, short: a click that Redis does not take within it
    goes to the spool; the writers wait longer (their reads block up to a second)."""
    timeout = timeout or settings.TRACKER_CLICK_BUFFER_TIMEOUT
    key = (os.getpid(), settings.TRACKER_CLICK_BUFFER_REDIS_URL, timeout)
    client = _clients.get(key)
    if client is None:
        with _lock:
            if any(other[:2] != key[:2] for other in _clients):
                _clients.clear()  # forked, or another URL
            client = _clients[key] = redis.Redis.from_url(
                key[1], socket_timeout=timeout, socket_connect_timeout=timeout
            )
    return client


# --- encoding -----------------------------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not stored in the click buffer")


def encode(click: Click) -> bytes:
    """The click's column values as JSON (attribute names; times in ISO 8601, full
    precision)."""
    values = {f.attname: getattr(click, f.attname) for f in Click._meta.concrete_fields}
    return json.dumps(values, default=_plain, separators=(",", ":")).encode()


def decode(payload: bytes | str) -> Click:
    """The unsaved Click that :func:`encode` encoded. Raises ValueError (or Django's
    ValidationError) for a payload that is not one."""
    values = json.loads(payload)
    click = Click()
    for field in Click._meta.concrete_fields:
        if field.attname in values:
            setattr(click, field.attname, field.to_python(values[field.attname]))
    return click


# --- the web side: push, spool -------------------------------------------------------------


def push(click: Click) -> None:
    """Buffer ``click`` (its ID and ``created_at`` set): Redis when it answers within
    ``TRACKER_CLICK_BUFFER_TIMEOUT``, else the spool. Raises OSError only when neither
    could take it (the spool's disk refused it too). Once the click is in Redis, a spool
    left from earlier is moved there; a failure of that move is logged, never the visitor's
    (the next click tries again)."""
    payload = encode(click)
    try:
        _add(_client(), [payload], [str(click.pk)])
    except redis.RedisError as exc:
        logger.warning("Click %s spooled: the click buffer is unreachable (%s).", click.pk, exc)
        _spool_append(payload)
        return
    if _spooled.is_set():
        try:
            spool_drain()
        except OSError:
            _spooled.set()
            logger.exception("Spooled clicks not moved to Redis yet.")


def _add(client: redis.Redis, payloads: Sequence[bytes], click_ids: Sequence[str]) -> None:
    """Each click's copy and stream entry, in one round trip (MULTI/EXEC)."""
    pipe = client.pipeline(transaction=True)
    ttl = int(settings.TRACKER_CLICK_COPY_SECONDS)
    for payload, click_id in zip(payloads, click_ids, strict=True):
        pipe.set(COPY_KEY.format(click_id), payload, ex=ttl)
        pipe.xadd(STREAM, {"c": payload})
    pipe.execute()


def _spool_dir() -> Path:
    path = Path(settings.TRACKER_CLICK_SPOOL_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _spool_append(payload: bytes) -> None:
    """Append one click to this process's spool file, under an exclusive lock, reopening
    the file when a drain moved it away meanwhile."""
    path = _spool_dir() / f"clicks-{socket.gethostname()}-{os.getpid()}.jsonl"
    while True:
        with open(path, "ab") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            try:
                if path.exists() and os.fstat(spool.fileno()).st_ino == path.stat().st_ino:
                    spool.write(payload + b"\n")
                    spool.flush()
                    _spooled.set()
                    return
            finally:
                fcntl.flock(spool, fcntl.LOCK_UN)


def spool_drain() -> int:
    """Move every spooled click of this machine to Redis; returns how many. A file is
    renamed before it is read (a process appending to it then opens a new one) and
    removed once its clicks are in Redis; on a Redis error it is kept for the next drain."""
    moved = 0
    _spooled.clear()
    for path in sorted(_spool_dir().glob("clicks-*.jsonl")):
        taken = path.with_suffix(f".draining-{os.getpid()}")
        try:
            path.rename(taken)
        except FileNotFoundError:
            continue  # another process took it
        moved += _drain_file(taken)
    for taken in sorted(_spool_dir().glob(f"clicks-*.draining-{os.getpid()}")):
        moved += _drain_file(taken)  # left by an earlier failed drain of this process
    return moved


def _drain_file(path: Path) -> int:
    with open(path, "rb") as spool:
        fcntl.flock(spool, fcntl.LOCK_EX)  # a writer that opened it before the rename ends
        lines = [line.rstrip(b"\n") for line in spool if line.strip()]
    payloads, ids = [], []
    for line in lines:
        try:
            ids.append(str(decode(line).pk))
            payloads.append(line)
        except (ValueError, TypeError):
            logger.error("Spooled click unreadable, dropped: %r", line[:200])
    try:
        for start in range(0, len(payloads), BATCH):
            _add(_client(), payloads[start : start + BATCH], ids[start : start + BATCH])
    except redis.RedisError:
        _spooled.set()
        return 0  # kept: the next drain sends it again (a click added twice is written once)
    path.unlink()
    return len(payloads)


# --- the writers ----------------------------------------------------------------------------


Plan = Callable[[Click], object]


def write(clicks: Sequence[Click], plan: Plan) -> list[Click]:
    """INSERT the clicks not in the table yet and ``plan`` the click postbacks of each one
    inserted, in the caller's transaction; returns the clicks inserted (a click already
    stored is skipped: its postbacks were planned when it was stored)."""
    written = rows.insert_new(clicks)
    for click in written:
        plan(click)
    return written


def flush_one(click_id: uuid.UUID | str, plan: Plan) -> bool:
    """Write the buffered click with this ID now, in the caller's transaction, with its
    click postbacks (``plan``); True when the buffer had it. False without a buffer, for
    an unknown ID, or when Redis cannot be reached (then the click is unknown for now)."""
    if not enabled():
        return False
    try:
        payload = _client().get(COPY_KEY.format(click_id))
    except redis.RedisError:
        logger.warning("Click %s not looked up in the click buffer: unreachable.", click_id)
        return False
    if payload is None:
        # Written and its copy deleted since the caller looked: in the table now.
        return Click.objects.filter(pk=click_id).exists()
    with transaction.atomic():
        write([decode(payload)], plan)
    return True


class Flusher:
    """The writing loop of one worker process: read a batch (its own pending entries first,
    then new ones, waiting up to a second), write it, acknowledge it; claim the entries
    another writer left pending for ``TRACKER_CLICK_CLAIM_SECONDS``."""

    _started: dict[int, Flusher] = {}

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.had_pending = False  # the last round wrote entries read before (pending)

    @classmethod
    def start_for_process(cls, plan: Plan) -> Flusher | None:
        """Start this process's writer thread (once), planning click postbacks with
        ``plan``; None without a buffer."""
        if not enabled():
            return None
        with _lock:
            flusher = cls._started.get(os.getpid())
            if flusher is None:
                flusher = cls._started[os.getpid()] = cls(plan)
                flusher._thread = threading.Thread(
                    target=flusher.run, name="click-writer", daemon=True
                )
                flusher._thread.start()
        return flusher

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        claim_every = settings.TRACKER_CLICK_CLAIM_SECONDS
        next_claim = time.monotonic()
        pending_first = True
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + claim_every
                    self._claim_abandoned()
                    pending_first = True  # what was claimed is this writer's pending now
                self.round(pending_first)
                pending_first = self.had_pending  # more may be pending
            except Exception:
                logger.warning("Clicks not written yet; trying again", exc_info=True)
                connection.close()
                pending_first = True
                self._stop.wait(1.0)

    def _ensure_group(self) -> None:
        try:
            _client(WRITER_TIMEOUT).xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def round(self, pending_first: bool = True) -> int:
        """Write one batch: this writer's pending entries, else new ones (waiting up to
        one second for them); returns how many entries were handled."""
        client = _client(WRITER_TIMEOUT)
        entries: list[Entry] = []
        if pending_first:
            entries = self._read(client, "0", block=None)
        self.had_pending = bool(entries)
        if not entries:
            entries = self._read(client, ">", block=1000)
        if entries:
            self._write(client, entries)
        return len(entries)

    def _read(self, client: redis.Redis, start: str, block: int | None) -> list[Entry]:
        streams: dict[Any, Any] = {STREAM: start}  # redis-py's stubs: invariant dict types
        try:
            answer = client.xreadgroup(GROUP, self.name, streams, count=BATCH, block=block)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group()  # the first writer, or the stream was removed
            answer = client.xreadgroup(GROUP, self.name, streams, count=BATCH, block=block)
        return list(_entries(answer))

    def _write(self, client: redis.Redis, entries: list[Entry]) -> None:
        clicks, ids = [], []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if fields is None:
                continue  # deleted while pending: only acknowledged
            try:
                clicks.append(decode(fields[b"c"]))
            except (KeyError, ValueError, TypeError):
                logger.error("Buffered click unreadable, dropped: %r", fields)
        with transaction.atomic():
            written = write(clicks, self.plan)
        pipe = client.pipeline(transaction=False)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        if clicks:
            pipe.delete(*(COPY_KEY.format(click.pk) for click in clicks))
        pipe.execute()
        stored = len(clicks) - len(written)
        logger.debug("%d buffered clicks written, %d already stored.", len(written), stored)

    def _claim_abandoned(self) -> None:
        """Take over the entries another writer read and did not acknowledge in time; the
        next round reads them as this writer's own."""
        idle_ms = int(settings.TRACKER_CLICK_CLAIM_SECONDS * 1000)
        try:
            client = _client(WRITER_TIMEOUT)
            client.xautoclaim(STREAM, GROUP, self.name, min_idle_time=idle_ms, count=BATCH)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise


def _entries(answer: Any) -> Iterator[Entry]:
    """The entries of an XREADGROUP answer; a deleted entry still pending reads as
    ``(id, None)``."""
    for _stream, entries in answer or []:
        yield from entries
