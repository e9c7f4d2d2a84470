"""Database connections the server dropped: telling them apart, and when a write may run again.

PostgreSQL drops connections on a failover, a restart or ``pg_terminate_backend``. The web
process's pool checks a connection before handing it out (``CONN_HEALTH_CHECKS``, see
tracker/settings.py), but one dropped while a request uses it still fails that request's
next query. A transaction whose connection broke before its COMMIT was sent was rolled back
by the server: running it again on a fresh connection cannot write anything twice. One that
broke during COMMIT may have been written, so it is not run again blindly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from psycopg_pool import PoolTimeout

# What a dropped connection raises (psycopg's "server closed the connection unexpectedly",
# "terminating connection due to administrator command", "the connection is closed").
CONNECTION_ERRORS = (OperationalError, InterfaceError)


class BrokeBeforeCommit(Exception):
    """A connection error raised inside :func:`atomic`'s block, so before its COMMIT: the
    transaction was rolled back. ``error``: the Django ``DatabaseError`` raised."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def atomic(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """``transaction.atomic()`` whose block, when its connection is found closed by a
    connection error (:data:`CONNECTION_ERRORS`), raises :class:`BrokeBeforeCommit`. Every
    other error, and an error of COMMIT itself, comes out unchanged."""
    with transaction.atomic(using=using):
        try:
            yield
        except CONNECTION_ERRORS as exc:
            if not closed(using):
                raise
            raise BrokeBeforeCommit(exc) from exc


def closed(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether the connection in use is closed (psycopg: the server dropped it). Without a
    query: inside a failed transaction, a query would fail on a live connection too."""
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


def reconnect(error: Exception, using: str = DEFAULT_DB_ALIAS) -> bool:
    """After ``error``: whether the work that raised it was cut by a dropped connection and
    may run again. If so, a closed connection still held is let go (a pooled one goes back
    to the pool, which discards it), so the next query takes a fresh one, checked by the
    pool. (Leaving a transaction, Django may already have taken a fresh one itself.)

    True for :class:`BrokeBeforeCommit`, and for a connection error outside a transaction
    that left the connection closed. False for other errors (a lock or statement timeout, a
    deadlock: the connection is alive); when the pool had no connection to give within its
    timeout (waiting again would double the wait); and inside a transaction the caller did
    not open (``in_atomic_block``): its work is lost with the connection, and only its owner
    may run it again.
    """
    conn = connections[using]
    if conn.in_atomic_block:
        return False
    if isinstance(error, BrokeBeforeCommit):
        lost = True
    elif isinstance(error, CONNECTION_ERRORS) and not isinstance(error.__cause__, PoolTimeout):
        lost = conn.connection is None or closed(using)
    else:
        lost = False
    if lost:
        release_closed(using)
    return lost
