"""Clicks and impressions: read-only visit lists with what enrichment recorded.

The click table grows by millions of rows, so no filter here asks the database for the
distinct values of a column: device type and bot come from the field's choices, country, OS
and browser from the newest rows (read on the ``created_at`` index, cached a few minutes),
and dates are a range filter rather than a ``date_hierarchy`` (whose day list is a DISTINCT
over the whole table).
"""

from __future__ import annotations

import pycountry
from django.contrib import admin
from rangefilter.filters import DateTimeRangeFilter

from tracker import cache
from tracker.admin.base import ClickSearchMixin, ReadOnlyAdminMixin
from tracker.models import Click, Impression

_VISITOR = ("ip", "user_agent", "referrer", "referrer_domain", "language")
_GEO = ("country_code", "country_name", "region", "city")
_NETWORK = ("isp", "asn", "carrier", "connection_type")
_DEVICE = (
    "device_type", "is_bot", "device_brand", "device_model", "os", "os_version", "browser",
    "browser_version",
)  # fmt: skip
_VARIABLES = tuple(f"var{i}" for i in range(1, 11))


def _enrichment_fieldsets() -> tuple:
    return (
        ("Visitor", {"fields": _VISITOR}),
        ("Geo (from the IP)", {"fields": _GEO}),
        ("Network (from the IP)", {"fields": _NETWORK}),
        ("Device (from the user agent)", {"fields": _DEVICE}),
        ("Custom variables", {"fields": _VARIABLES, "classes": ("collapse",)}),
    )


class RecentValuesFilter(admin.SimpleListFilter):
    """Filter on a text column, offering the values of the newest ``sample_rows`` rows.

    A DISTINCT over a table of millions of clicks would read all of it on every list page;
    this reads ``sample_rows`` values on the ``created_at`` index once per ``cache_seconds``
    (per model and column, in the default cache; every time while the cache is unreachable).
    A value selected through the URL is offered even when it is not among them. Subclasses
    set ``field``, ``title`` and ``parameter_name``, and may override :meth:`label`.
    """

    field = ""
    sample_rows = 20_000
    cache_seconds = 300

    def label(self, value: str) -> str:
        return value

    def recent_values(self, model) -> list[str]:
        def newest_values() -> list[str]:
            newest = model.objects.order_by("-created_at").values_list(self.field, flat=True)
            return sorted({value for value in newest[: self.sample_rows] if value})

        key = f"admin-recent-values:{model._meta.label_lower}:{self.field}"
        return cache.get_or_compute(key, self.cache_seconds, newest_values)

    def lookups(self, request, model_admin):
        values = self.recent_values(model_admin.model)
        selected = self.value()
        if selected and selected not in values:
            values = sorted([*values, selected])
        return [(value, self.label(value)) for value in values]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class CountryFilter(RecentValuesFilter):
    title = "country"
    parameter_name = "country"
    field = "country_code"

    def label(self, value: str) -> str:
        country = pycountry.countries.get(alpha_2=value)
        return f"{value} {country.name}" if country is not None else value


class OsFilter(RecentValuesFilter):
    title = "OS"
    parameter_name = "os"
    field = "os"


class BrowserFilter(RecentValuesFilter):
    title = "browser"
    parameter_name = "browser"
    field = "browser"


_ENRICHMENT_FILTERS = (
    CountryFilter,
    ("device_type", admin.ChoicesFieldListFilter),
    OsFilter,
    BrowserFilter,
    "is_bot",
)


@admin.register(Click)
class ClickAdmin(ClickSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id", "created_at", "campaign", "traffic_source", "external_id", "ip", "country_code",
        "device_type", "os",
    )  # fmt: skip
    list_filter = (
        ("created_at", DateTimeRangeFilter), "traffic_source", "campaign", *_ENRICHMENT_FILTERS,
    )  # fmt: skip
    list_select_related = ("campaign", "traffic_source")
    search_help_text = "Exact click ID or external ID."
    readonly_fields = ("id", "created_at")
    fieldsets = (
        (None, {"fields": (
            "id", "created_at", "campaign", "traffic_source", "external_id", "offer", "lander",
            "lander_clicked_at",
        )}),
        *_enrichment_fieldsets(),
    )  # fmt: skip


@admin.register(Impression)
class ImpressionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id", "created_at", "campaign", "traffic_source", "external_id", "ip", "country_code",
        "device_type", "os",
    )  # fmt: skip
    list_filter = (
        ("created_at", DateTimeRangeFilter), "traffic_source", "campaign", *_ENRICHMENT_FILTERS,
    )  # fmt: skip
    list_select_related = ("campaign", "traffic_source")
    search_fields = ("=external_id",)
    search_help_text = "Exact external ID."
    readonly_fields = ("id", "created_at")
    fieldsets = (
        (None, {"fields": ("id", "created_at", "campaign", "traffic_source", "external_id")}),
        *_enrichment_fieldsets(),
    )
