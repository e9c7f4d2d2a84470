"""Delivery indexes no query needs, dropped (each delivery row wrote 17 index entries).

- ``postbacks_delivery_created_at_318663dc`` (``created_at``): served by
  ``delivery_created_idx`` (``created_at, id``).
- ``postbacks_delivery_idempotency_key_8704e191_like``: the ``varchar_pattern_ops`` twin of
  the unique key, for ``LIKE 'prefix%'``; the key is only ever written. Its uniqueness stays
  (the same ``postbacks_delivery_idempotency_key_key`` constraint, now a ``UniqueConstraint``
  in the state, which makes no twin).

The dispatcher's and sweeper's indexes (``delivery_status_due_idx``, ``delivery_due_idx``,
``delivery_in_flight_idx``) are untouched. ``DROP INDEX CONCURRENTLY`` on PostgreSQL (no lock
on the table the dispatcher writes), hence non-atomic; plain operations on SQLite.
"""

from django.db import migrations, models

from tracker.migration_operations import RemoveIndexConcurrently, field_index_named


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("postbacks", "0010_destination_kinds"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="delivery",
                    name="created_at",
                    field=models.DateTimeField(auto_now_add=True),
                ),
                migrations.AlterField(
                    model_name="delivery",
                    name="idempotency_key",
                    field=models.CharField(max_length=200),
                ),
                migrations.AddConstraint(
                    model_name="delivery",
                    constraint=models.UniqueConstraint(
                        fields=("idempotency_key",), name="postbacks_delivery_idempotency_key_key"
                    ),
                ),
            ]
        ),
        field_index_named("delivery", "created_at", "postbacks_delivery_created_at_318663dc"),
        field_index_named(
            "delivery",
            "idempotency_key",
            "postbacks_delivery_idempotency_key_8704e191_like",
            like=True,
        ),  # fmt: skip
        RemoveIndexConcurrently("delivery", "postbacks_delivery_created_at_318663dc"),
        RemoveIndexConcurrently("delivery", "postbacks_delivery_idempotency_key_8704e191_like"),
    ]
