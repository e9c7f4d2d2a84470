"""The project's PostgreSQL backend (tracker/backends/postgresql) for the tests
(``tests/settings.py`` selects it on a ``postgres://`` DATABASE_URL), with one change:
emptying the database between transactional tests (pytest-django's ``transactional_db``,
``live_server``, the worker fixtures) deletes the rows instead of truncating the tables.

TRUNCATE of the ~40 tables costs about a second on a small machine, nearly all of it in the
server (new files for each table and index, the old ones dropped at commit), and every
integration test pays it; DELETE of the few rows a test leaves takes milliseconds. Both run in
one transaction; the foreign keys Django creates are deferrable, so the order of the DELETEs
does not matter. With ``reset_sequences`` (or ``allow_cascade``) Django's TRUNCATE is kept.
Everything else, the worker processes' connections included, is the project's backend."""

from __future__ import annotations

from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations

from tracker.backends.postgresql import base


class DatabaseOperations(PostgresOperations):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if not tables or reset_sequences or allow_cascade:
            return super().sql_flush(
                style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        deletes = [
            f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};"
            for table in tables
        ]
        return [f"{style.SQL_KEYWORD('SET CONSTRAINTS ALL DEFERRED')};", *deletes]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
