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
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta, tzinfo
from zoneinfo import ZoneInfo

from django.db.models import QuerySet

from campaigns.models import TrafficSourceParameter
from postbacks.macros import format_value
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


class _Line:
    """A csv.writer target that hands each written line back instead of storing it."""

    def write(self, value: str) -> str:
        return value
