"""Django's PostgreSQL backend whose connection pool checks a connection without a query.

Django hands psycopg's pool ``ConnectionPool.check_connection`` when ``CONN_HEALTH_CHECKS`` is
on: an empty query, one round trip to PostgreSQL each time a request takes a connection from
the pool, the costliest step of checking out (about a tenth of a ``/cv`` request's CPU in the
web process). :func:`check_connection` looks at the connection's socket instead: a connection
that sat idle in the pool has nothing to read unless the server ended it (a terminated
backend, a restart, a failover send an error and close the socket) or sent a notice; only
then does it run the empty query, which raises for a dropped connection. A connection that
breaks silently (no FIN from a vanished host) passes the check and fails the request's first
statement, which :mod:`tracker.db` tells apart and runs again where that is safe.

Its schema editor (migrations) sets a lock timeout and a statement timeout
(:mod:`tracker.backends.postgresql.schema`).

ENGINE ``tracker.backends.postgresql`` (tracker/settings.py sets it for ``postgres://`` URLs).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from tracker.backends.postgresql.schema import DatabaseSchemaEditor


def check_connection(conn: psycopg.Connection[Any]) -> None:
    """psycopg_pool ``check``: return if ``conn`` may be handed out, raise if not.

    Raises ``psycopg.OperationalError`` when the connection is closed or not idle (a
    transaction left open), or when its socket has something to read and the empty query
    that then runs fails (the server ended the connection).
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("The connection is closed.")
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise psycopg.OperationalError("The connection is not idle.")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL backend; its pool (``OPTIONS["pool"]``) checks connections with
    :func:`check_connection` when ``CONN_HEALTH_CHECKS`` is on."""

    # Migrations wait at most MIGRATION_LOCK_TIMEOUT for a lock (schema.py).
    SchemaEditorClass = DatabaseSchemaEditor
    # Django's own, absent from its type stubs.
    _connection_pools: ClassVar[dict[str, ConnectionPool]]
    _configure_connection: Callable[[psycopg.Connection[Any]], None]

    @property
    def pool(self) -> ConnectionPool | None:
        """The process's pool of this alias, made on first use (as Django makes it)."""
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            options = {} if pool_options is True else dict(pool_options)
            kwargs = self.get_connection_params()
            kwargs["autocommit"] = True  # as Django: it sets the mode it needs later on
            made = ConnectionPool(
                kwargs=kwargs,
                open=False,  # opened on first use, not at start-up
                configure=self._configure_connection,
                check=check_connection if self.settings_dict["CONN_HEALTH_CHECKS"] else None,
                **options,
            )
            self._connection_pools.setdefault(self.alias, made)
        pool: ConnectionPool = self._connection_pools[self.alias]
        return pool
