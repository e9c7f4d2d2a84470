"""Database connections the server dropped: telling them apart, and when a write may run again.

PostgreSQL drops connections on a failover, a restart or ``pg_terminate_backend``. The web
process's pool checks a connection before handing it out (``CONN_HEALTH_CHECKS``, see
tracker/settings.py), but one dropped while a request uses it still fails that request's
next query. A transaction whose connection broke before its COMMIT was sent was rolled back
by the server: running it again on a fresh connection cannot write anything twice. One that
broke during COMMIT may have been written, so it is not run again blindly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from psycopg_pool import PoolTimeout

# What a dropped connection raises (psycopg's "server closed the connection unexpectedly",
# "terminating connection due to administrator command", "the connection is closed").
CONNECTION_ERRORS = (OperationalError, InterfaceError)
# SQLSTATEs of a connection the server ended: class 08 (connection exception), and
# admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown, cannot_connect_now
# (the server starting or stopping). psycopg's own errors (closed socket) have none.
DROPPED_STATES = ("08", "57P01", "57P02", "57P03")
# Work cut by a dropped connection before COMMIT runs again on a fresh connection, after
# each of these pauses (seconds): more than once, and not at once, because a failover, a
# restart or a sweep of pg_terminate_backend ends every pooled connection within a few
# milliseconds, and a connection the server has begun to end may still pass the pool's check.
RECONNECT_PAUSES = (0.0, 0.1)
RECONNECTS = len(RECONNECT_PAUSES)


class BrokeBeforeCommit(Exception):
    """The connection was :func:`dropped` inside :func:`atomic`'s block, so before its
    COMMIT: the server rolled the transaction back. ``error``: the Django error raised."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def atomic(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """``transaction.atomic()`` whose block raises :class:`BrokeBeforeCommit` when its
    connection was :func:`dropped`. Every other error, and an error of COMMIT itself, comes
    out unchanged."""
    with transaction.atomic(using=using):
        try:
            yield
        except CONNECTION_ERRORS as exc:
            if not dropped(exc):
                raise
            raise BrokeBeforeCommit(exc) from exc


def dropped(error: BaseException) -> bool:
    """Whether ``error`` says the server ended the connection (or could not be reached).

    False for the errors of a live connection (a lock or statement timeout, a deadlock, a
    serialization failure), for a pool that had no connection to give within its timeout
    (waiting again would double the wait) and for other databases than PostgreSQL.
    """
    if isinstance(error, BrokeBeforeCommit):
        return True
    cause = error.__cause__
    if not isinstance(error, CONNECTION_ERRORS) or not isinstance(cause, psycopg.Error):
        return False
    if isinstance(cause, PoolTimeout):
        return False
    return cause.sqlstate is None or cause.sqlstate.startswith(DROPPED_STATES)


def closed(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether the connection in use is closed (psycopg: the server dropped it)."""
    raw = connections[using].connection
    return raw is not None and bool(getattr(raw, "closed", False))


def in_transaction(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether a transaction is open (``atomic``): its work is lost with its connection."""
    return connections[using].in_atomic_block


def release_closed(using: str = DEFAULT_DB_ALIAS) -> None:
    """Let go of the connection in use when it is closed (a pooled one goes back to the
    pool, which discards it): the next query takes a fresh one, checked by the pool."""
    if closed(using):
        connections[using].close()


def reconnect(error: BaseException, attempt: int = 0, using: str = DEFAULT_DB_ALIAS) -> bool:
    """After ``error``: whether the work that raised it was cut by a :func:`dropped`
    connection and may run again on a fresh one, as its ``attempt``-th reconnect (0-based,
    below :data:`RECONNECTS`). If so, a closed connection still held is let go, so that the
    next query takes a fresh one, checked by the pool (leaving a transaction, Django may
    have taken a fresh one itself already), after that attempt's pause.

    False inside a transaction the caller did not open (``in_atomic_block``): its work is
    lost with the connection, and only its owner may run it again.
    """
    if attempt >= RECONNECTS or in_transaction(using) or not dropped(error):
        return False
    release_closed(using)
    time.sleep(RECONNECT_PAUSES[attempt])
    return True


# --- One run at a time, across processes and hosts ---------------------------------------------


def single_run_in_transaction(name: str, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether this transaction may run the job ``name`` (a periodic sweep every worker
    process runs): ``pg_try_advisory_xact_lock`` on the name, held until the transaction
    ends, so one runner at a time whatever the number of workers, hosts or beats, and the
    others skip their turn rather than wait. Always True on other databases (SQLite runs one
    writer at a time anyway). Call it inside ``transaction.atomic()``."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return True
    if not connection.in_atomic_block:
        raise RuntimeError("single_run_in_transaction() outside a transaction: a lock for nothing")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [name])
        return bool(cursor.fetchone()[0])


@contextmanager
def single_run(name: str, using: str = DEFAULT_DB_ALIAS) -> Iterator[bool]:
    """Yield whether this process may run the job ``name``, for a job of many transactions
    (a purge in batches): ``pg_try_advisory_lock`` on the name, held by this connection
    until the block ends (or the connection does). Always True on other databases."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired and not closed(using):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
