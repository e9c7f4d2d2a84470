"""The schema editor of migrations on PostgreSQL: every migration waits at most
``MIGRATION_LOCK_TIMEOUT`` for a lock, and a statement runs at most
``MIGRATION_STATEMENT_TIMEOUT``.

An ``ALTER TABLE`` queued behind a long reader holds every later query of that table behind
it (PostgreSQL grants locks in order): without a lock timeout, one 15 s report stalled every
``/c`` and ``/cv`` for 14 s. With it, the migration fails within the timeout, the traffic
goes on, and the migration is run again (README, "Upgrades"). Both timeouts are set on the
session while the editor is open (the ``RunPython`` steps of the migration included) and
reset after; ``CREATE``/``DROP INDEX CONCURRENTLY`` runs without the statement timeout, since
building an index on a big table takes as long as it takes while writes go on.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db.backends.postgresql.schema import DatabaseSchemaEditor as PostgresSchemaEditor

CONCURRENTLY = re.compile(r"\bINDEX\s+CONCURRENTLY\b", re.IGNORECASE)


class DatabaseSchemaEditor(PostgresSchemaEditor):
    """Django's PostgreSQL schema editor, with the migration timeouts on its session."""

    def __enter__(self) -> DatabaseSchemaEditor:
        if not self.collect_sql:
            self._set_timeouts(
                settings.MIGRATION_LOCK_TIMEOUT, settings.MIGRATION_STATEMENT_TIMEOUT
            )
        try:
            return super().__enter__()
        except BaseException:
            self._reset_timeouts()
            raise

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        try:
            super().__exit__(exc_type, exc_value, traceback)
        finally:
            self._reset_timeouts()

    def execute(self, sql: Any, params: Any = ()) -> None:
        if self.collect_sql or not CONCURRENTLY.search(str(sql)):
            return super().execute(sql, params)
        self._set_timeouts(settings.MIGRATION_LOCK_TIMEOUT, "0")
        try:
            return super().execute(sql, params)
        finally:
            self._set_timeouts(
                settings.MIGRATION_LOCK_TIMEOUT, settings.MIGRATION_STATEMENT_TIMEOUT
            )

    def _set_timeouts(self, lock_timeout: str, statement_timeout: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false), "
                "set_config('statement_timeout', %s, false)",
                [lock_timeout, statement_timeout],
            )

    def _reset_timeouts(self) -> None:
        """Back to the server's values; not in a transaction that failed (its rollback,
        by its owner, takes the values set in it away)."""
        if self.collect_sql or self.connection.connection is None or self.connection.needs_rollback:
            return
        with self.connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
            cursor.execute("RESET statement_timeout")
