"""Migrations on PostgreSQL wait at most MIGRATION_LOCK_TIMEOUT for a lock: an ALTER behind a
long reader fails with a lock timeout instead of queueing (and every query of the table with
it) until the reader ends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import OperationalError, connection
from django.db.backends.postgresql.schema import DatabaseSchemaEditor as PostgresSchemaEditor

from tests.conftest import _database_url

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's lock_timeout"),
    # Queued behind the reader, the ALTER would wait for ever: fail instead.
    pytest.mark.timeout(60),
]


@contextmanager
def long_reader(table: str) -> Iterator[None]:
    """Another session reads ``table`` in a transaction it keeps open (a slow report): it
    holds the table's ACCESS SHARE lock, which an ALTER TABLE must wait for."""
    with psycopg.connect(_database_url()) as reader:
        reader.execute(f"SELECT count(*) FROM {table}").fetchone()
        yield
        reader.rollback()


def session_setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        return cursor.fetchone()[0]


def test_an_alter_behind_a_long_reader_fails_at_the_lock_timeout(settings):
    settings.MIGRATION_LOCK_TIMEOUT = "200ms"
    default = session_setting("lock_timeout")
    with (
        long_reader("tracker_click"),
        pytest.raises(OperationalError) as failure,
        connection.schema_editor() as editor,
    ):
        editor.execute("ALTER TABLE tracker_click ADD COLUMN lock_probe integer")
    assert isinstance(failure.value.__cause__, psycopg.errors.LockNotAvailable)
    assert "lock timeout" in str(failure.value)
    # Nothing changed, and the session is back to its own values.
    with connection.cursor() as cursor:
        columns = [
            c.name for c in connection.introspection.get_table_description(cursor, "tracker_click")
        ]
    assert "lock_probe" not in columns
    assert session_setting("lock_timeout") == default


def test_the_editor_sets_both_timeouts_and_lifts_the_statement_one_for_concurrent_builds(
    settings, monkeypatch
):
    settings.MIGRATION_LOCK_TIMEOUT = "3s"
    settings.MIGRATION_STATEMENT_TIMEOUT = "10min"
    during = {}
    run = PostgresSchemaEditor.execute

    def spy(editor, sql, params=()):
        during[sql.split()[0]] = (
            session_setting("lock_timeout"),
            session_setting("statement_timeout"),
        )
        return run(editor, sql, params)

    monkeypatch.setattr(PostgresSchemaEditor, "execute", spy)
    with connection.schema_editor(atomic=False) as editor:
        editor.execute("ALTER TABLE tracker_click ADD COLUMN lock_probe integer")
        editor.execute("CREATE INDEX CONCURRENTLY lock_probe_idx ON tracker_click (lock_probe)")
        editor.execute("DROP INDEX CONCURRENTLY lock_probe_idx")
        editor.execute("ALTER TABLE tracker_click DROP COLUMN lock_probe")
    assert during == {"ALTER": ("3s", "10min"), "CREATE": ("3s", "0"), "DROP": ("3s", "0")}
    assert session_setting("statement_timeout") == "0"
