"""Google Ads offline click conversions: the CSV file Google Ads imports.

Sending conversions to Google Ads directly goes through its API
(``ConversionUploadService.UploadClickConversions``), which needs an OAuth 2 client, a
refresh token and a developer token approved by Google: not done here. Instead this module
writes the "Conversions from clicks" upload template, which is imported in Google Ads >
Goals > Conversions > Uploads (by hand, or on a schedule from an HTTPS URL or a sheet)::

    Parameters:TimeZone=Europe/Berlin
    Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency
    Cj0KCQiA5rGuBhCnARIsAN11vgR,Purchase,2026-01-02 03:04:05,2.35,USD

- the ``Parameters`` row gives the time zone of every Conversion Time: a time zone ID
  (``Europe/Berlin``, recommended: it follows daylight saving time) or a GMT offset
  (``+0000`` for UTC, which is written so);
- Conversion Time is ``yyyy-MM-dd HH:mm:ss`` in that zone: when the conversion happened
  (``converted_at``, else when it was received); it must be after the click;
- Conversion Name is the name of a conversion action of the account, exactly;
- Conversion Value is the payout (``>= 0``), Conversion Currency its ISO 4217 code.
  Re-importing a row (same click ID, name and time) is ignored by Google as a duplicate.

Sources: https://support.google.com/google-ads/answer/7014069 (the template and time
zones) and https://developers.google.com/google-ads/api/docs/conversions/upload-clicks
(the same fields through the API).

The Google click ID (gclid) is the click's external ID when its traffic source reads the
external ID from ``gclid`` (the Google Ads preset does), else the custom variable named (or
read from the URL parameter) ``gclid``. iOS clicks that carry only ``wbraid``/``gbraid`` are
not exported: the preset does not capture them and they need another template.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import QuerySet
from django.utils import timezone as django_timezone

from campaigns.models import TrafficSourceParameter
from tracker.macros import format_value
from tracker.models import Click, Conversion

GCLID = "gclid"
HEADER = ["Google Click ID", "Conversion Name", "Conversion Time", "Conversion Value",
          "Conversion Currency"]  # fmt: skip
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
ANY_TYPE = "*"
UTC_KEYS = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Zulu", "Etc/Zulu", "UCT", "Etc/UCT"}
# What Google issues: URL-safe base64 text. Anything else was not set by Google and could
# be a formula when the file is opened in a spreadsheet.
GCLID_RE = re.compile(r"[A-Za-z0-9_\-]{1,255}")
# Why a conversion was left out of the file (the keys of the ``skipped`` counter).
SKIP_TEST = "test conversion"
SKIP_STATUS = "status not exported"
SKIP_NO_GCLID = "no gclid"
SKIP_BAD_GCLID = "gclid not as Google issues it"
SKIP_NO_NAME = "no conversion name for its type"
SKIP_NEGATIVE = "negative payout"
# A time zone given as a GMT offset: +0000, -0500, +05:30.
OFFSET_RE = re.compile(r"([+-])(\d{2}):?(\d{2})")
ZONE_MAX_LENGTH = 64


def export_csv(
    conversions: Iterable[Conversion],
    conversion_name_map: Mapping[str, str],
    tz: tzinfo | str,
    *,
    statuses: Iterable[str] = (Conversion.Status.APPROVED,),
    skipped: Counter[str] | None = None,
) -> Iterator[str]:
    """The upload file, one CSV line at a time (``\\r\\n`` ends each): the Parameters row,
    the header, then one row per exported conversion.

    ``conversion_name_map``: conversion type -> Google Ads conversion action name, ``"*"``
    for any other type (see :func:`parse_names`). ``tz``: a tzinfo or a time zone name.
    Left out, and counted in ``skipped`` by reason (the ``SKIP_*`` texts): test
    conversions, statuses not in ``statuses`` (approved only by default), conversions
    without a gclid or with one Google did not issue, types without a name, negative
    payouts. A QuerySet is read in chunks with its clicks and traffic sources.
    Raises ZoneInfoNotFoundError for an unknown time zone name, ValueError for a zone
    :func:`zone_label` cannot name (both when called, before any line).
    """
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    label = zone_label(zone)
    wanted = set(statuses)
    skipped = Counter() if skipped is None else skipped
    gclid_of = GclidFinder()
    writer = csv.writer(_Line())
    if isinstance(conversions, QuerySet):
        conversions = (
            conversions.select_related("click__traffic_source")
            .order_by("created_at", "pk")
            .iterator(chunk_size=2000)
        )

    def rows() -> Iterator[str]:
        yield writer.writerow([f"Parameters:TimeZone={label}"])
        yield writer.writerow(HEADER)
        for conversion in conversions:
            reason, row = _row(conversion, conversion_name_map, zone, wanted, gclid_of)
            if reason:
                skipped[reason] += 1
            else:
                yield writer.writerow(row)

    return rows()


def _row(
    conversion: Conversion,
    names: Mapping[str, str],
    zone: tzinfo,
    statuses: set[str],
    gclid_of: GclidFinder,
) -> tuple[str, list[str]]:
    """("", the CSV row) or (why it is skipped, [])."""
    if conversion.is_test:
        return SKIP_TEST, []
    if conversion.status not in statuses:
        return SKIP_STATUS, []
    gclid = gclid_of(conversion.click)
    if not gclid:
        return SKIP_NO_GCLID, []
    if not GCLID_RE.fullmatch(gclid):
        return SKIP_BAD_GCLID, []
    name = names.get(conversion.conversion_type) or names.get(ANY_TYPE) or ""
    if not name.strip():
        return SKIP_NO_NAME, []
    if conversion.payout < 0:
        return SKIP_NEGATIVE, []
    when = (conversion.converted_at or conversion.created_at).astimezone(zone)
    value = format_value(conversion.payout)
    return "", [gclid, name.strip(), when.strftime(TIME_FORMAT), value, conversion.currency]


class GclidFinder:
    """The gclid of a click (see the module docstring); reads each traffic source's
    ``gclid`` custom variable once (one query per source), "" when there is none."""

    def __init__(self) -> None:
        self._slots: dict[int, int | None] = {}

    def __call__(self, click: Click) -> str:
        source = click.traffic_source
        if source.external_id_param.lower() == GCLID:
            return click.external_id.strip()
        if source.pk not in self._slots:
            params = TrafficSourceParameter.objects.filter(traffic_source=source)
            slots = [p.slot for p in params if GCLID in (p.name.lower(), p.param.lower())]
            self._slots[source.pk] = slots[0] if slots else None
        slot = self._slots[source.pk]
        return getattr(click, f"var{slot}", "").strip() if slot else ""


def parse_names(values: Iterable[str]) -> dict[str, str]:
    """Conversion names from ``"type=Name"`` items, or a bare ``"Name"`` for every type
    (``"*"``), e.g. ``["Purchase", "lead = Lead form"]`` -> ``{"*": "Purchase", "lead":
    "Lead form"}``. Blank items are ignored; ValueError for an item with an empty side or
    a type given twice."""
    names: dict[str, str] = {}
    for item in values:
        if not item.strip():
            continue
        key, sep, name = item.partition("=")
        key, name = (key.strip(), name.strip()) if sep else (ANY_TYPE, key.strip())
        if not key or not name:
            raise ValueError(f"{item.strip()!r}: write type=Name (e.g. sale=Purchase) or a name.")
        if key in names:
            raise ValueError(f"The conversion name for {key!r} is given twice.")
        names[key] = name
    return names


def zone_label(zone: tzinfo) -> str:
    """The Parameters row's time zone: the zone's ID (``Europe/Berlin``), or a ``+hhmm``
    GMT offset for UTC and fixed offsets (Google's list of IDs has no ``UTC``).
    ValueError for a zone that has neither an ID nor a fixed offset."""
    key = getattr(zone, "key", "") or ""
    if key and key not in UTC_KEYS:
        return key
    offset = timedelta(0) if key else zone.utcoffset(None)
    if offset is None:
        raise ValueError("Give a time zone ID (e.g. Europe/Berlin) or a fixed UTC offset.")
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def summary(exported: int, skipped: Counter[str]) -> str:
    """One sentence for the admin and the command, e.g. "2 conversions exported; 3 left
    out: no gclid 2, test conversion 1."."""
    text = f"{exported} conversion{'' if exported == 1 else 's'} exported"
    if not skipped:
        return text + "."
    reasons = ", ".join(f"{reason} {count}" for reason, count in skipped.most_common())
    return f"{text}; {skipped.total()} left out: {reasons}."


# --- A period's export: the options of the command and of the API ------------------------


class OptionsError(ValueError):
    """Refused export options: ``errors`` maps each bad option (``since``, ``until``,
    ``conversion_name``, ``time_zone``, ``status``) to a sentence saying why; ``str()`` is
    the sentences joined."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__(" ".join(self.errors.values()))


@dataclass(frozen=True)
class PeriodExport:
    """The upload file of the conversions **received** (``created_at``) from ``since``
    (included) to ``until`` (excluded), both aware datetimes in UTC; ``names``, ``zone``
    and ``statuses`` as :func:`export_csv` takes them."""

    since: datetime
    until: datetime
    names: dict[str, str]
    zone: tzinfo
    statuses: tuple[str, ...]

    def lines(
        self,
        conversions: QuerySet[Conversion] | None = None,
        *,
        skipped: Counter[str] | None = None,
    ) -> Iterator[str]:
        """:func:`export_csv` of those of ``conversions`` (all by default) received in the
        period, read in chunks as the lines are consumed."""
        queryset = Conversion.objects.all() if conversions is None else conversions
        received = queryset.filter(created_at__gte=self.since, created_at__lt=self.until)
        return export_csv(received, self.names, self.zone, statuses=self.statuses, skipped=skipped)

    def file_name(self) -> str:
        """``google-ads-<since>-<until>.csv``, each bound as ``20260101`` (a midnight) or
        ``20260101-063000`` in the export's time zone."""

        def stamp(moment: datetime) -> str:
            local = moment.astimezone(self.zone)
            return local.strftime(
                "%Y%m%d" if local.time() == datetime.min.time() else "%Y%m%d-%H%M%S"
            )

        return f"google-ads-{stamp(self.since)}-{stamp(self.until)}.csv"


def parse_period_export(
    *,
    since: str | None,
    until: str | None,
    names: Iterable[str],
    time_zone: str,
    statuses: Iterable[str] = (),
    label: Callable[[str], str] = str,
    now: datetime | None = None,
) -> PeriodExport:
    """The export the command's options or the API's query parameters ask for, as texts:
    ``since`` (required) and ``until`` (default ``now``, else the current time) as
    :func:`parse_moment` reads them in ``time_zone`` (:func:`parse_zone`); ``names`` as
    :func:`parse_names` (at least one); ``statuses`` conversion statuses (default:
    approved). ``label`` names an option in messages (``"until"`` -> ``"--until"``).

    Raises :class:`OptionsError` with one message per bad option: an unknown time zone, a
    missing or unreadable ``since``, an unreadable ``until``, ``until`` not after ``since``,
    no conversion name or a malformed one, an unknown status."""
    errors: dict[str, str] = {}
    zone: tzinfo | None = None
    try:
        zone = parse_zone(time_zone)
    except ValueError as exc:
        errors["time_zone"] = str(exc)
    start = end = None
    if zone is not None:
        if not (since or "").strip():
            errors["since"] = f"{label('since')} is required: a date (2026-01-01) or ISO time."
        else:
            try:
                start = parse_moment(since or "", zone)
            except ValueError as exc:
                errors["since"] = f"{label('since')}: {exc}"
        try:
            end = parse_moment(until, zone) if until else (now or django_timezone.now())
        except ValueError as exc:
            errors["until"] = f"{label('until')}: {exc}"
        if start is not None and end is not None and end <= start:
            errors["until"] = f"{label('until')} must be after {label('since')}."
    try:
        parsed_names = parse_names(names)
    except ValueError as exc:
        errors["conversion_name"] = f"{label('conversion_name')}: {exc}"
    else:
        if not parsed_names:
            errors["conversion_name"] = (
                f"{label('conversion_name')} is required: the Google Ads conversion action "
                "name (Purchase), or type=Name for one conversion type (sale=Purchase)."
            )
    wanted = tuple(dict.fromkeys(statuses)) or (Conversion.Status.APPROVED,)
    unknown = [status for status in wanted if status not in Conversion.Status.values]
    if unknown:
        errors["status"] = (
            f"Unknown status {unknown[0][:64]!r}: use {', '.join(Conversion.Status.values)}."
        )
    if errors:
        raise OptionsError(errors)
    assert start is not None and end is not None and zone is not None
    return PeriodExport(start, end.astimezone(UTC), parsed_names, zone, wanted)


def parse_zone(text: str) -> tzinfo:
    """A time zone from its ID (``Europe/Berlin``, ``UTC``) or a GMT offset (``+0000``,
    ``-05:00``), surrounding spaces ignored. ValueError saying what to write otherwise."""
    text = text.strip()
    offset = OFFSET_RE.fullmatch(text)
    if offset:
        sign, hours, minutes = offset.groups()
        if int(hours) < 24 and int(minutes) < 60:
            delta = timedelta(hours=int(hours), minutes=int(minutes))
            return timezone(-delta if sign == "-" else delta)
    elif text and len(text) <= ZONE_MAX_LENGTH:
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory
            pass
    raise ValueError(
        f"Unknown time zone {text[:ZONE_MAX_LENGTH]!r}: give a time zone ID such as "
        "Europe/Berlin or a GMT offset such as +0000."
    )


def parse_moment(text: str, zone: tzinfo) -> datetime:
    """An aware datetime in UTC from ``2026-01-01`` (midnight) or an ISO 8601 moment
    (``2026-01-01T06:00``, ``2026-01-01T06:00:00+02:00``); without an offset it is in
    ``zone``. ValueError when unreadable or outside years 1..9999 once in UTC."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:64]!r} is not a date (2026-01-01) or ISO time.") from None
    if django_timezone.is_naive(moment):
        moment = moment.replace(tzinfo=zone)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{text[:64]!r} is outside years 1 to 9999 in UTC.") from None


class _Line:
    """A csv.writer target that hands each written line back instead of storing it."""

    def write(self, value: str) -> str:
        return value
