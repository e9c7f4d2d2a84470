"""Indexes for the delivery log in admin and its dashboard.

Built with CREATE INDEX CONCURRENTLY on PostgreSQL, so the dispatcher keeps writing while a
big log table is indexed; hence a non-atomic migration. Plain CREATE INDEX elsewhere.
"""

from django.db import migrations, models


class AddIndexConcurrently(migrations.AddIndex):
    """AddIndex, concurrently on PostgreSQL (same state, so makemigrations stays in sync)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.add_index(model, self.index, concurrently=True)
        else:
            schema_editor.add_index(model, self.index)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        model = from_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, self.index, concurrently=True)
        else:
            schema_editor.remove_index(model, self.index)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("postbacks", "0004_rule_engine"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(fields=["created_at", "id"], name="delivery_created_idx"),
        ),
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(
                fields=["last_status_code", "created_at"], name="delivery_last_status_idx"
            ),
        ),
        AddIndexConcurrently(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("is_test", False), ("status__in", ["delivered", "failed"])),
                fields=["updated_at", "traffic_source", "status"],
                name="delivery_finished_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="attempt",
            index=models.Index(fields=["started_at", "id"], name="attempt_started_idx"),
        ),
        AddIndexConcurrently(
            model_name="attempt",
            index=models.Index(
                fields=["status_code", "started_at"], name="attempt_status_code_idx"
            ),
        ),
        AddIndexConcurrently(
            model_name="attempt",
            index=models.Index(
                condition=models.Q(("duration_ms__gt", 1000)),
                fields=["started_at", "id"],
                name="attempt_slow_idx",
            ),
        ),
    ]
