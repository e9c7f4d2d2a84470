"""List filters of the conversion admin: how a conversion came in, its type."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from tracker.events import Channel
from tracker.models import (
    Conversion,
    ConversionType,
)

# The conversion-type filter offers the listed types and those of this many latest
# conversions (a bounded read, whatever the size of the table).
RECENT_TYPES = 5000


class ChannelFilter(admin.SimpleListFilter):
    """How rows arrived (the one channel enum, ``tracker.events.Channel``), on the column
    ``field``; only the channels present are offered (one EXISTS probe per channel on the
    column's index, cheaper than a DISTINCT over the whole table). Subclasses set
    ``parameter_name`` and ``field``."""

    title = "method"
    field = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        table = model_admin.model._default_manager.order_by()
        return [
            (value, label)
            for value, label in Channel.choices
            if value == self.value() or table.filter(**{self.field: value}).exists()
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in Channel.values:
            return queryset.filter(**{self.field: self.value()})
        return queryset


class MethodFilter(ChannelFilter):
    """How conversions arrived (``Conversion.method``)."""

    parameter_name = field = "method"


class ConversionTypeFilter(admin.SimpleListFilter):
    """Conversion types: the listed ones and those of the latest conversions (bounded)."""

    title = "conversion type"
    parameter_name = "ct"

    def lookups(self, request, model_admin):
        latest = Conversion.objects.order_by("-created_at").values_list(
            "conversion_type", flat=True
        )[:RECENT_TYPES]
        codes = {code for code in latest if code} | set(
            ConversionType.objects.values_list("code", flat=True)
        )
        chosen = self.value()
        if chosen:
            codes.add(chosen)
        return [(code, code) for code in sorted(codes)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(conversion_type=self.value())
        return queryset
