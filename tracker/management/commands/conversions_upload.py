"""``manage.py conversions_upload FILE [--user NAME]``: import a CSV file of conversions now,
without a worker, printing one result per row and the totals (same processing as the admin's
upload)."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tracker import uploads
from tracker.models import ConversionUpload, InboundRequest


class Command(BaseCommand):
    help = (
        "Import conversions from a CSV file (click_id,payout,transaction_id,conversion_type,"
        "timestamp; header optional) through the same path as postbacks, synchronously. "
        "Prints one result per row and the totals; the upload is kept in the admin."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="The CSV file (UTF-8).")
        parser.add_argument("--user", help="Username recorded as the uploader.")
        parser.add_argument(
            "--resume",
            type=int,
            metavar="UPLOAD_ID",
            help="Process an existing upload again instead (rows already done are skipped).",
        )

    def handle(self, *args, **options):
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user named {options['user']!r}.")
        if options["resume"]:
            upload = ConversionUpload.objects.filter(pk=options["resume"]).first()
            if upload is None:
                raise CommandError(f"No upload #{options['resume']}.")
        elif options["file"]:
            path = Path(options["file"])
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
            try:
                upload = uploads.upload_create(path.name, data, user=user, enqueue=False)
            except uploads.UploadError as exc:
                raise CommandError(f"{path.name} refused: {exc}") from None
        else:
            raise CommandError("Give a CSV file, or --resume UPLOAD_ID.")
        self.stdout.write(f"Upload #{upload.pk}: {upload.file_name}, {upload.total_rows} rows.")
        upload = uploads.upload_process(upload, on_row=self.row_done)
        self.stdout.write(
            f"{upload.processed_rows} of {upload.total_rows} rows: {upload.accepted} accepted, "
            f"{upload.duplicates} duplicates, {upload.status_changes} status changes, "
            f"{upload.errors} errors."
        )
        if upload.state != ConversionUpload.State.DONE:
            raise CommandError(f"Upload #{upload.pk} {upload.state}: {upload.error}")

    def row_done(self, row: uploads.Row, log: InboundRequest) -> None:
        self.stdout.write(f"row {row.number}: {uploads.result_text(log)}")
