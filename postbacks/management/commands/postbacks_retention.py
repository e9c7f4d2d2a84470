"""``manage.py postbacks_retention``: delete the postback log older than N days, now.

What the hourly ``postbacks.retention`` task does, without its time budget: attempts and
finished deliveries (delivered, failed, cancelled) older than ``--days`` (default
POSTBACKS_RETENTION_DAYS), in batches of ``--batch-size`` rows. ``--dry-run`` only counts.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from postbacks.tasks import RETENTION_BATCH, old_attempts, old_deliveries, retention_purge


class Command(BaseCommand):
    help = "Delete attempts and finished deliveries older than --days days, in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Age in days (default: POSTBACKS_RETENTION_DAYS; 0 deletes nothing).",
        )
        parser.add_argument("--batch-size", type=int, default=RETENTION_BATCH)
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(
        self, *args: Any, days: int | None, batch_size: int, dry_run: bool, **options: Any
    ) -> None:
        if days is None:
            days = settings.POSTBACKS_RETENTION_DAYS
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if days <= 0:
            self.stdout.write("Retention is off (0 days): nothing deleted.")
            return
        if dry_run:
            cutoff = timezone.now() - timedelta(days=days)
            self.stdout.write(
                f"Would delete {old_attempts(cutoff).count()} attempts and "
                f"{old_deliveries(cutoff).count()} finished deliveries older than {days} days "
                f"(before {cutoff:%Y-%m-%d %H:%M})."
            )
            return
        purged = retention_purge(days, batch_size=batch_size)
        self.stdout.write(
            f"Deleted {purged.attempts} attempts and {purged.deliveries} finished deliveries "
            f"older than {days} days."
        )
