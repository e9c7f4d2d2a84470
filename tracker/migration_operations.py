"""Index operations for migrations of big, busy tables.

On PostgreSQL they build and drop indexes ``CONCURRENTLY`` (``django.contrib.postgres``), so
the tables keep taking writes meanwhile; a migration using them must set ``atomic = False``.
On other databases (SQLite for tests and the demo) they are the plain ``AddIndex`` and
``RemoveIndex``.

``field_index_named`` moves an index Django made for a field (``db_index=True``, a foreign
key, the ``_like`` twin of an indexed ``CharField`` on PostgreSQL) into the migration state
under its database name, so that these operations can drop it.
"""

from __future__ import annotations

from django.contrib.postgres.operations import (
    AddIndexConcurrently as PostgresAddIndexConcurrently,
)
from django.contrib.postgres.operations import (
    RemoveIndexConcurrently as PostgresRemoveIndexConcurrently,
)
from django.db import migrations, models


def _postgres(schema_editor) -> bool:
    return schema_editor.connection.vendor == "postgresql"


def _elsewhere(schema_editor, index: models.Index) -> bool:
    """Whether the plain operation applies: not PostgreSQL, and not an index with operator
    classes (the ``_like`` twins exist on PostgreSQL only)."""
    return not _postgres(schema_editor) and not index.opclasses


class AddIndexConcurrently(PostgresAddIndexConcurrently):
    """``CREATE INDEX CONCURRENTLY`` on PostgreSQL, ``AddIndex`` elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if _postgres(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        elif _elsewhere(schema_editor, self.index):
            migrations.AddIndex.database_forwards(
                self, app_label, schema_editor, from_state, to_state
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if _postgres(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        elif _elsewhere(schema_editor, self.index):
            migrations.AddIndex.database_backwards(
                self, app_label, schema_editor, from_state, to_state
            )


class RemoveIndexConcurrently(PostgresRemoveIndexConcurrently):
    """``DROP INDEX CONCURRENTLY`` on PostgreSQL, ``RemoveIndex`` elsewhere."""

    def _index(self, state, app_label):
        return state.models[app_label, self.model_name_lower].get_index_by_name(self.name)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if _postgres(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        elif _elsewhere(schema_editor, self._index(from_state, app_label)):
            migrations.RemoveIndex.database_forwards(
                self, app_label, schema_editor, from_state, to_state
            )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if _postgres(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        elif _elsewhere(schema_editor, self._index(to_state, app_label)):
            migrations.RemoveIndex.database_backwards(
                self, app_label, schema_editor, from_state, to_state
            )


def field_index_named(
    model_name: str, field: str, name: str, *, like: bool = False
) -> migrations.SeparateDatabaseAndState:
    """A state-only operation: the index Django made for ``field`` (of ``model_name``),
    named ``name`` in the database, becomes a named index of the state (``like``: the
    ``varchar_pattern_ops`` twin). The database is left as it is."""
    index = models.Index(
        fields=[field], name=name, opclasses=["varchar_pattern_ops"] if like else ()
    )
    return migrations.SeparateDatabaseAndState(
        state_operations=[migrations.AddIndex(model_name=model_name, index=index)]
    )
