"""``manage.py export_google_ads --since ... --conversion-name ... > file.csv``: the Google
Ads "Conversions from clicks" upload file of the conversions received in a period.

The CSV goes to standard output, the summary (how many exported, how many left out and
why) to standard error. Conversions are picked by when they were **received**
(``created_at``, ``--since`` included, ``--until`` excluded): a daily job exporting
yesterday misses none, whatever conversion time the network reported. See
``tracker.google_ads`` for the file format, which conversions are left out and how the
options are read (``parse_period_export``, shared with the REST API's export).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracker import google_ads
from tracker.models import Conversion


def option_label(name: str) -> str:
    """The command-line spelling of an export option: ``time_zone`` -> ``--time-zone``."""
    return "--" + name.replace("_", "-")


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
            help="Time zone ID (or GMT offset such as +0000) of the conversion times and of "
            "--since/--until (default: TIME_ZONE, %(default)s).",
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=Conversion.Status.values,
            help="Export conversions with this status; repeat for several (default: approved).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            export = google_ads.parse_period_export(
                since=str(options["since"]),
                until=str(options["until"]) if options["until"] else None,
                names=options["conversion_name"] or [],
                time_zone=str(options["time_zone"]),
                statuses=options["status"] or [],
                label=option_label,
            )
        except google_ads.OptionsError as exc:
            raise CommandError(str(exc)) from None
        skipped: Counter[str] = Counter()
        written = 0
        for line in export.lines(skipped=skipped):
            self.stdout.write(line, ending="")
            written += 1
        self.stderr.write(google_ads.summary(written - 2, skipped))
