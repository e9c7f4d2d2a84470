"""Filters shared by the API's list endpoints (django-filter)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms


class UTCDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 date-time, converted to UTC: an offset the database cannot store (e.g.
    -19:52) or a time that leaves years 1..9999 once in UTC is a 400, not a 500."""

    def clean(self, value: Any) -> datetime | None:
        parsed = super().clean(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError(
                "Enter a date-time between years 1 and 9999 in UTC.", code="invalid"
            ) from None


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """``IsoDateTimeFilter`` whose value is checked and converted to UTC
    (:class:`UTCDateTimeField`)."""

    field_class = UTCDateTimeField


class CreatedRangeFilterSet(django_filters.FilterSet):
    """``created_after`` (inclusive) and ``created_before`` (exclusive), ISO 8601."""

    created_after = UTCDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        label="Created at or after (ISO 8601, e.g. 2026-11-01T00:00:00Z).",
    )
    created_before = UTCDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        label="Created before (ISO 8601).",
    )
