"""Indexes no query needs, dropped: each row of /cv wrote 37 index entries.

- ``tracker_conversion_click_id_b443211a`` (conversion ``click_id``): every lookup by click is
  served by ``uniq_conversion_click_dedup`` (``click_id, dedup_key``).
- ``tracker_inboundrequest_upload_id_a350170b`` (inbound log ``upload_id``): served by
  ``inbound_upload_row_idx`` (``upload_id, row_number``).
- The ``varchar_pattern_ops`` twins of conversion ``method``, inbound-log ``channel`` and
  ``click_id`` (``..._like``): they serve ``LIKE 'prefix%'`` only, and these columns are only
  ever compared whole (admin and API filters, the click ID search). Their plain indexes stay,
  renamed to ``conversion_method_idx``, ``inbound_channel_idx``, ``inbound_click_id_idx``.

Dropped with ``DROP INDEX CONCURRENTLY`` on PostgreSQL (no lock on the hot tables), hence
non-atomic; plain operations on SQLite, which has no ``_like`` twins.
"""

import django.db.models.deletion
from django.db import migrations, models

from tracker.migration_operations import RemoveIndexConcurrently, field_index_named


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("tracker", "0008_crm_channel"),
    ]

    operations = [
        # The state first: the fields lose db_index, their indexes get their database names.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="conversion",
                    name="click",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="conversions",
                        to="tracker.click",
                    ),
                ),
                migrations.AlterField(
                    model_name="conversion",
                    name="method",
                    field=models.CharField(
                        choices=[
                            ("s2s", "S2S postback"),
                            ("pixel", "Image pixel"),
                            ("script", "JS script"),
                            ("upload", "CSV upload"),
                            ("api", "API"),
                            ("admin", "Added in admin"),
                        ],
                        default="s2s",
                        help_text="How the conversion arrived.",
                        max_length=10,
                    ),
                ),
                migrations.AlterField(
                    model_name="inboundrequest",
                    name="channel",
                    field=models.CharField(
                        choices=[
                            ("s2s", "S2S postback"),
                            ("pixel", "Image pixel"),
                            ("script", "JS script"),
                            ("upload", "CSV upload"),
                            ("api", "API"),
                            ("admin", "Admin"),
                            ("crm", "CRM status sync"),
                        ],
                        default="s2s",
                        max_length=8,
                        verbose_name="method",
                    ),
                ),
                migrations.AlterField(
                    model_name="inboundrequest",
                    name="click_id",
                    field=models.CharField(blank=True, max_length=64, verbose_name="click ID"),
                ),
                migrations.AlterField(
                    model_name="inboundrequest",
                    name="upload",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="rows",
                        to="tracker.conversionupload",
                    ),
                ),
            ]
        ),
        field_index_named("conversion", "click", "tracker_conversion_click_id_b443211a"),
        field_index_named("conversion", "method", "tracker_conversion_method_114bca3e"),
        field_index_named(
            "conversion", "method", "tracker_conversion_method_114bca3e_like", like=True
        ),
        field_index_named("inboundrequest", "channel", "tracker_inboundrequest_channel_409e2fde"),
        field_index_named(
            "inboundrequest", "channel", "tracker_inboundrequest_channel_409e2fde_like", like=True
        ),
        field_index_named("inboundrequest", "click_id", "tracker_inboundrequest_click_id_a9b884e9"),
        field_index_named(
            "inboundrequest", "click_id", "tracker_inboundrequest_click_id_a9b884e9_like", like=True
        ),
        field_index_named("inboundrequest", "upload", "tracker_inboundrequest_upload_id_a350170b"),
        # Then the database.
        RemoveIndexConcurrently("conversion", "tracker_conversion_click_id_b443211a"),
        RemoveIndexConcurrently("conversion", "tracker_conversion_method_114bca3e_like"),
        RemoveIndexConcurrently("inboundrequest", "tracker_inboundrequest_channel_409e2fde_like"),
        RemoveIndexConcurrently("inboundrequest", "tracker_inboundrequest_click_id_a9b884e9_like"),
        RemoveIndexConcurrently("inboundrequest", "tracker_inboundrequest_upload_id_a350170b"),
        migrations.RenameIndex(
            "conversion",
            new_name="conversion_method_idx",
            old_name="tracker_conversion_method_114bca3e",
        ),
        migrations.RenameIndex(
            "inboundrequest",
            new_name="inbound_channel_idx",
            old_name="tracker_inboundrequest_channel_409e2fde",
        ),
        migrations.RenameIndex(
            "inboundrequest",
            new_name="inbound_click_id_idx",
            old_name="tracker_inboundrequest_click_id_a9b884e9",
        ),
    ]
