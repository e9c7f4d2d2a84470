"""``manage.py export_google_ads --since ... --conversion-name ... > file.csv``: the Google
Ads "Conversions from clicks" upload file of the conversions received in a period.

The CSV goes to standard output, the summary (how many exported, how many left out and
why) to standard error. Conversions are picked by when they were **received**
(``created_at``, ``--since`` included, ``--until`` excluded): a daily job exporting
yesterday misses none, whatever conversion time the network reported. See
``tracker.google_ads`` for the file format and which conversions are left out.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tracker import google_ads
from tracker.models import Conversion


class Command(BaseCommand):
    help = (
        "Write the Google Ads click-conversion upload CSV of the conversions received "
        "between --since and --until to standard output."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            required=True,
            help="First day or moment, e.g. 2026-01-01 or 2026-01-01T06:00 (in --time-zone).",
        )
        parser.add_argument(
            "--until", help="Day or moment after the last one (excluded); default: now."
        )
        parser.add_argument(
            "--conversion-name",
            action="append",
            required=True,
            metavar="[TYPE=]NAME",
            help="The Google Ads conversion action name, for every type (Purchase) or for one "
            "conversion type (sale=Purchase); repeat for several types.",
        )
        parser.add_argument(
            "--time-zone",
            default=settings.TIME_ZONE,
            help="Time zone ID of the conversion times and of --since/--until "
            "(default: TIME_ZONE, %(default)s).",
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=Conversion.Status.values,
            help="Export conversions with this status; repeat for several (default: approved).",
        )

    def handle(self, *args: object, **options: object) -> None:
        try:
            zone = ZoneInfo(str(options["time_zone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise CommandError(f"Unknown time zone {options['time_zone']!r}.") from None
        try:
            names = google_ads.parse_names(options["conversion_name"])
        except ValueError as exc:
            raise CommandError(f"--conversion-name {exc}") from None
        since = parse_moment(str(options["since"]), zone, "--since")
        until = (
            parse_moment(str(options["until"]), zone, "--until")
            if options["until"]
            else timezone.now()
        )
        if until <= since:
            raise CommandError("--until must be after --since.")
        conversions = Conversion.objects.filter(created_at__gte=since, created_at__lt=until)
        skipped: Counter[str] = Counter()
        lines = google_ads.export_csv(
            conversions,
            names,
            zone,
            statuses=options["status"] or [Conversion.Status.APPROVED],
            skipped=skipped,
        )
        written = 0
        for line in lines:
            self.stdout.write(line, ending="")
            written += 1
        self.stderr.write(google_ads.summary(written - 2, skipped))


def parse_moment(text: str, zone: tzinfo, option: str) -> datetime:
    """An aware datetime from ``2026-01-01`` (midnight) or an ISO 8601 moment; a moment
    without an offset is in ``zone``. CommandError naming ``option`` when unreadable."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not a date (2026-01-01) or ISO time.") from None
    return moment.replace(tzinfo=zone) if timezone.is_naive(moment) else moment
