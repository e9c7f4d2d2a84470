"""``manage.py exchange_rates_load FILE``: load exchange rates from a CSV or JSON file.

The same loader as the admin's "Load rates from a file" page (``tracker.currency.rates_load``):
every line is checked first, and the file is applied all or nothing in one transaction.
Prints one line per rate; exits with an error, having changed nothing, when any line is
refused. ``-`` reads standard input, so a cron job can pipe a provider's export in.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracker import currency
from tracker.currency import Action

MAX_BYTES = 1_000_000


class Command(BaseCommand):
    help = (
        "Load exchange rates from a file: CSV 'currency,rate' lines (optional header) or a "
        'JSON object {"EUR": "1.08"}; rate = 1 unit of the currency in the display currency. '
        "All or nothing: one refused line changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path of the CSV or JSON file, or - for stdin.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Check and report, change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        data = self._read(str(options["file"]))
        result = currency.rates_load(data, dry_run=bool(options["dry_run"]))
        self.stdout.write(f"Display currency: {currency.display_currency()}")
        for line in result.lines:
            self.stdout.write(self._describe(line))
        if not result.ok:
            raise CommandError(result.summary())
        self.stdout.write(self.style.SUCCESS(result.summary()))

    @staticmethod
    def _read(name: str) -> bytes:
        try:
            if name == "-":
                data = sys.stdin.buffer.read(MAX_BYTES + 1)
            else:
                with Path(name).open("rb") as handle:
                    data = handle.read(MAX_BYTES + 1)
        except OSError as exc:
            raise CommandError(f"Cannot read {name}: {exc.strerror or exc}.") from None
        if len(data) > MAX_BYTES:
            raise CommandError(f"{name} is larger than {MAX_BYTES} bytes: is it a rates file?")
        return data

    def _describe(self, line: currency.RateLine) -> str:
        text = f"line {line.line:>4}  {line.currency:<3}  {line.rate_text:>16}  {line.action}"
        if line.action == Action.UPDATED:
            text += f" (was {line.previous_text})"
        if line.message:
            text += f": {line.message}"
        if line.action == Action.REFUSED:
            return self.style.ERROR(text)
        return text
