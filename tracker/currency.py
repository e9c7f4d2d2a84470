"""Currencies: ISO 4217 codes (per ``pycountry``) and conversion with the admin-edited
exchange rates (:class:`tracker.models.ExchangeRate`, 1 unit in the display currency
``TRACKER_DISPLAY_CURRENCY``).

Rates are read from a per-process snapshot of the whole (small) rate table, kept
``TRACKER_RATES_CACHE_SECONDS`` (default 5): a conversion in another currency, and each
postback rule asking for another currency, would otherwise cost a SELECT each. Saving or
deleting a rate clears the snapshot of the process that saved it at once (the signal
receivers at the end of this module); other processes see the change within the cache time.

:func:`rates_load` reads a whole file of rates (CSV or JSON) and applies it all or nothing;
the admin's "Load rates from a file" page and ``manage.py exchange_rates_load`` use it.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import pycountry
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete, post_save

from tracker.models import Conversion, ExchangeRate

# Six decimal places, as Conversion.payout and display_payout store them.
QUANTUM = Decimal("0.000001")
# ExchangeRate.rate: 24 digits, 10 of them decimals.
RATE_QUANTUM = Decimal("1e-10")
RATE_LIMIT = Decimal("1e14")
# A rates file has one line per currency (about 180 exist): anything much longer is not one.
MAX_LINES = 2000
HEADER_NAMES = {"currency", "code", "currency_code", "iso", "iso_code"}
_BAD_WIDTH = object()  # the rate of a CSV row without exactly two cells


def is_known(code: str) -> bool:
    """Whether ``code`` (upper case, 3 letters) is an ISO 4217 currency."""
    return len(code) == 3 and pycountry.currencies.get(alpha_3=code) is not None


def display_currency() -> str:
    """The account's display currency (``TRACKER_DISPLAY_CURRENCY``, default USD)."""
    return settings.TRACKER_DISPLAY_CURRENCY


# (loaded at, {currency: rate}) of the whole table; None: not loaded.
_snapshot: tuple[float, dict[str, Decimal]] | None = None


def _cache_seconds() -> float:
    return float(getattr(settings, "TRACKER_RATES_CACHE_SECONDS", 5.0))


def _table() -> dict[str, Decimal]:
    """Every rate, from the snapshot while fresh, else one SELECT of the whole table."""
    global _snapshot
    now = time.monotonic()
    if _snapshot is not None and now - _snapshot[0] < _cache_seconds():
        return _snapshot[1]
    table = dict(ExchangeRate.objects.values_list("currency", "rate"))
    _snapshot = (now, table)
    return table


def rates_cache_clear(**kwargs: object) -> None:
    """Forget the rate snapshot (a signal receiver: takes and ignores signal arguments)."""
    global _snapshot
    _snapshot = None


def rate(code: str) -> Decimal | None:
    """1 unit of ``code`` in the display currency; 1 for the display currency itself; None
    when the rate table has no rate for it."""
    if code == display_currency():
        return Decimal(1)
    return _table().get(code)


def to_display(amount: Decimal, code: str) -> tuple[Decimal | None, Decimal | None]:
    """``(amount in the display currency, rate used)``, or ``(None, None)`` without a rate."""
    used = rate(code)
    if used is None:
        return None, None
    try:
        return (amount * used).quantize(QUANTUM), used
    except InvalidOperation:
        return None, None


def convert(amount: Decimal, source: str, target: str) -> Decimal | None:
    """``amount`` of ``source`` in ``target`` through the display currency, 6 decimal
    places; None when either rate is missing."""
    if source == target:
        return amount
    from_rate, to_rate = rate(source), rate(target)
    if from_rate is None or not to_rate:
        return None
    try:
        return (amount * from_rate / to_rate).quantize(QUANTUM)
    except InvalidOperation:
        return None


def missing_rates(*codes: str) -> list[str]:
    """Those of ``codes`` :func:`convert` has no usable rate for, in order, once each."""
    return [code for code in dict.fromkeys(codes) if not rate(code)]


# --- validation shared by the admin form and the loader ---------------------------------


def currency_problem(code: str) -> str:
    """Why ``code`` (already upper-cased) cannot have a rate; "" when it can."""
    if not code:
        return "A currency code is required."
    if len(code) != 3 or not code.isalpha() or not code.isascii():
        return f"{code!r} is not a three-letter ISO 4217 code (e.g. EUR)."
    if not is_known(code):
        return f"{code} is not an ISO 4217 currency."
    if code == display_currency():
        return (
            f"{code} is the display currency (TRACKER_DISPLAY_CURRENCY): its rate is always 1 "
            "and is not stored."
        )
    return ""


def rate_parse(raw: object) -> tuple[Decimal | None, str]:
    """``(rate, "")`` for a valid rate (a number or its text, > 0, rounded to 10 decimal
    places), else ``(None, why)``."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        return None, 'The rate must be a number or a string like "1.08".'
    text = str(raw).strip()
    if not text:
        return None, "The rate is missing."
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None, f"{text!r} is not a number (use a dot for decimals, e.g. 1.08)."
    return rate_check(value)


def rate_check(value: Decimal) -> tuple[Decimal | None, str]:
    """``(value rounded to 10 decimal places, "")`` when it is a usable rate, else
    ``(None, why)``."""
    if not value.is_finite():
        return None, "The rate must be a finite number."
    if value <= 0:
        return None, "The rate must be greater than 0."
    if value >= RATE_LIMIT:
        return None, "The rate is too large (at most 14 digits before the decimal point)."
    rounded = value.quantize(RATE_QUANTUM)
    if rounded <= 0:
        return None, "The rate is too small: it rounds to 0 at 10 decimal places."
    return rounded, ""


# --- the loader ---------------------------------------------------------------------------


class Action(StrEnum):
    """What loading one line of a rates file does."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    IGNORED = "ignored"  # the display currency at 1: always 1, never stored
    REFUSED = "refused"


@dataclass
class RateLine:
    """One line of a rates file and what loading it does (or would do)."""

    line: int  # CSV: line number in the file; JSON: position of the entry (1-based)
    currency: str
    rate: Decimal | None
    action: str = Action.REFUSED
    message: str = ""
    previous: Decimal | None = None

    @property
    def rate_text(self) -> str:
        return _plain(self.rate)

    @property
    def previous_text(self) -> str:
        return _plain(self.previous)


def _plain(value: Decimal | None) -> str:
    """``1.0800000000`` -> ``1.08``, ``1E+2`` -> ``100``; None -> ""."""
    return "" if value is None else f"{value.normalize():f}"


@dataclass
class RatesLoad:
    """The outcome of :func:`rates_load`: every line, and whether anything was written."""

    lines: list[RateLine] = field(default_factory=list)
    applied: bool = False
    error: str = ""  # a problem with the whole file (unreadable, empty, too long)

    def count(self, action: str) -> int:
        return sum(1 for line in self.lines if line.action == action)

    @property
    def refused(self) -> list[RateLine]:
        return [line for line in self.lines if line.action == Action.REFUSED]

    @property
    def ok(self) -> bool:
        return not self.error and not self.refused

    def summary(self) -> str:
        """One sentence: what was (or would have been) done."""
        if self.error:
            return f"Nothing was changed: {self.error}"
        counts = ", ".join(
            f"{self.count(action)} {action}" for action in Action if self.count(action)
        )
        if self.refused:
            return f"Nothing was changed: {len(self.refused)} line(s) refused ({counts})."
        if not self.applied:
            return f"Checked, nothing was changed: {counts}."
        return f"Exchange rates loaded: {counts}."


def _text(data: bytes | str) -> str:
    """The file as text: UTF-8 with or without a byte-order mark (raises ValueError)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})."
            ) from None
    return data.removeprefix("\ufeff")


class _Pairs(list):
    """A JSON object as its (key, value) pairs in order: duplicate keys are kept."""


def _json_entries(text: str) -> Iterator[tuple[int, str, object]]:
    """``(position, code, raw rate)`` of a JSON object of rates (raises ValueError)."""
    try:
        pairs = json.loads(text, parse_float=Decimal, object_pairs_hook=_Pairs)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not valid JSON ({exc}).") from None
    if not isinstance(pairs, _Pairs):
        raise ValueError('JSON must be an object of rates, e.g. {"EUR": "1.08"}.')
    for position, (code, raw) in enumerate(pairs, start=1):
        yield position, code, raw


def _csv_entries(text: str) -> Iterator[tuple[int, str, object]]:
    """``(line number, code, raw rate)`` of CSV rows ``currency,rate``; a first row whose
    rate is not a number and whose first cell names a currency column is a header. Blank
    rows and rows starting with ``#`` are skipped; a row of another width yields a rate
    of ``_BAD_WIDTH`` with the cells in ``code`` (refused by the caller)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    first = True
    try:
        for cells in reader:
            cells = [cell.strip() for cell in cells]
            while cells and not cells[-1]:
                cells.pop()
            if not cells or cells[0].startswith("#"):
                continue
            if first:
                first = False
                if cells[0].lower() in HEADER_NAMES and (
                    len(cells) < 2 or rate_parse(cells[1])[0] is None
                ):
                    continue
            if len(cells) != 2:
                yield reader.line_num, ",".join(cells), _BAD_WIDTH
            else:
                yield reader.line_num, cells[0], cells[1]
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}: not valid CSV ({exc}).") from None


def rates_parse(data: bytes | str) -> list[RateLine]:
    """The lines of a rates file, each validated (``action`` refused with a ``message``,
    else ``created`` for now: :func:`rates_load` sets what applying it does).

    Shapes (UTF-8, with or without a byte-order mark):

    - CSV, ``currency,rate`` per line, e.g. ``EUR,1.08``; an optional header row
      (``currency,rate``); blank lines and lines starting with ``#`` are ignored; the
      rate uses a dot for decimals and is 1 unit of the currency in the display currency.
    - JSON, one object: ``{"EUR": "1.08", "GBP": 1.27}`` (numbers or strings; numbers are
      read as decimals, never floats). Detected by its leading ``{`` (or ``[``, refused).

    A line is refused when: it has not exactly two columns; the code is not a three-letter
    ISO 4217 currency (codes are read in any case); it is the display currency with a rate
    other than 1 (at 1 it is ``ignored``: its rate is always 1); the rate is not a number,
    not finite, not > 0, too large or rounds to 0 at 10 decimal places; or the currency
    already appeared earlier in the file.

    Raises ValueError (with a sentence) when the file as a whole is unreadable: not UTF-8,
    malformed CSV quoting or JSON, a JSON value that is not an object, no rates at all, or
    more than ``MAX_LINES`` lines.
    """
    text = _text(data)
    is_json = text.lstrip()[:1] in ("{", "[")
    entries = _json_entries(text) if is_json else _csv_entries(text)
    lines: list[RateLine] = []
    seen: dict[str, int] = {}
    for number, raw_code, raw_rate in entries:
        if len(lines) >= MAX_LINES:
            raise ValueError(f"more than {MAX_LINES} rates: is this a rates file?")
        code = str(raw_code).strip().upper()
        line = RateLine(line=number, currency=code[:40], rate=None)
        lines.append(line)
        if raw_rate is _BAD_WIDTH:
            line.message = "Expected two columns separated by a comma: currency,rate."
            continue
        if code == display_currency():
            _display_line(line, raw_rate)
            continue
        line.message = currency_problem(code)
        if line.message:
            continue
        line.rate, line.message = rate_parse(raw_rate)
        if line.rate is None:
            continue
        if code in seen:
            line.rate, line.message = None, f"{code} already appears on line {seen[code]}."
            continue
        seen[code] = number
        line.action = Action.CREATED
    if not lines:
        raise ValueError("no rates found (expected lines like EUR,1.08).")
    return lines


def _display_line(line: RateLine, raw_rate: object) -> None:
    """The display currency in a file: ignored at 1 (rate files often list their base),
    refused otherwise (the file is probably based on another currency)."""
    value, problem = rate_parse(raw_rate)
    line.rate = value
    if value is not None and value == 1:
        line.action = Action.IGNORED
        line.message = f"{line.currency} is the display currency: its rate is always 1."
        return
    line.rate = None
    line.message = problem or (
        f"{line.currency} is the display currency, whose rate is always 1, but this file "
        f"says {_plain(value)}: are its rates based on another currency?"
    )


def rates_load(data: bytes | str, *, dry_run: bool = False) -> RatesLoad:
    """Parse a rates file (:func:`rates_parse`: shapes and refusals) and apply it all or
    nothing, in one transaction: every valid currency's rate is created or updated,
    currencies not in the file are left as they are.

    When any line is refused, or with ``dry_run``, nothing is written; each line still says
    what it would do (``created``, ``updated`` with ``previous``, ``unchanged``). Never
    raises for bad input: ``RatesLoad.error`` holds a problem with the whole file.
    Conversions already recorded keep the rate they were recorded with.
    """
    try:
        lines = rates_parse(data)
    except ValueError as exc:
        return RatesLoad(error=str(exc))
    result = RatesLoad(lines=lines)
    valid = [line for line in lines if line.action == Action.CREATED]
    try:
        with transaction.atomic():
            existing = {
                rate.currency: rate
                for rate in ExchangeRate.objects.select_for_update().filter(
                    currency__in=[line.currency for line in valid]
                )
            }
            for line in valid:
                current = existing.get(line.currency)
                if current is None:
                    line.action = Action.CREATED
                elif current.rate == line.rate:
                    line.action, line.previous = Action.UNCHANGED, current.rate
                else:
                    line.action, line.previous = Action.UPDATED, current.rate
            if dry_run or result.refused:
                return result
            for line in valid:
                current, rate = existing.get(line.currency), line.rate
                if rate is None:  # never: a valid line has its rate (rates_parse)
                    continue
                if current is None:
                    ExchangeRate.objects.create(currency=line.currency, rate=rate)
                elif line.action == Action.UPDATED:
                    current.rate = rate
                    current.save(update_fields=["rate", "updated_at"])
            result.applied = True
    except IntegrityError:
        result.applied = False
        result.error = "another change to the rates happened at the same time; load it again."
    return result


def _rates_changed(*, using: str | None = None, **kwargs: object) -> None:
    """Clear the snapshot now, and again once the transaction that changed a rate commits
    (a lookup in between would cache the old value)."""
    rates_cache_clear()
    transaction.on_commit(rates_cache_clear, using=using)


# Connected here rather than in an AppConfig: whoever reads rates has imported this module.
def refresh_display_payout(conversion: Conversion) -> None:
    """Set ``display_payout``, ``exchange_rate`` and ``display_currency`` of ``conversion``
    from its ``payout`` and ``currency`` at the current rates, after a correction of either;
    not saved."""
    conversion.display_payout, conversion.exchange_rate = to_display(
        conversion.payout, conversion.currency
    )
    conversion.display_currency = display_currency()


post_save.connect(_rates_changed, sender=ExchangeRate, dispatch_uid="tracker-rates-save")
post_delete.connect(_rates_changed, sender=ExchangeRate, dispatch_uid="tracker-rates-delete")
