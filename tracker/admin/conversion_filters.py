"""List filters of the conversion admin: how a conversion came in, its type."""

from __future__ import annotations

from django.contrib import admin

from tracker.models import (
    Conversion,
    ConversionType,
)

# The conversion-type filter offers the listed types and those of this many latest
# conversions (a bounded read, whatever the size of the table).
RECENT_TYPES = 5000


class MethodFilter(admin.SimpleListFilter):
    """How conversions arrived; only the methods present are offered (one EXISTS probe per
    method on the ``method`` index, cheaper than a DISTINCT over the whole table)."""

    title = "method"
    parameter_name = "method"

    def lookups(self, request, model_admin):
        table = Conversion.objects.order_by()
        return [
            (value, label)
            for value, label in Conversion.Method.choices
            if value == self.value() or table.filter(method=value).exists()
        ]

    def queryset(self, request, queryset):
        if self.value() in Conversion.Method.values:
            return queryset.filter(method=self.value())
        return queryset


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
