"""The inbound log ("Conversions — In"): every conversion that tried to enter, by any method
(S2S postback, pixel, script, CSV upload row, API, admin), with the answer given.

Built like the postback log (``postbacks.admin.log``) for a big table: its paginator never
counts the table, the list reads no heavy text column, filter choices come from index
probes or bounded reads, and search is a union of indexed lookups.
"""

from __future__ import annotations

import contextlib
import uuid

from django.contrib import admin
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils.html import format_html
from rangefilter.filters import DateTimeRangeFilter

from campaigns.models import AffiliateNetwork
from tracker.admin.conversion_filters import ChannelFilter
from tracker.logadmin import LogChangeList, LogPaginator, ReadOnlyAdminMixin, compact_time
from tracker.models import Conversion, InboundRequest

TITLE = "Conversions — In"
# The error-code filter offers the codes of this many latest requests (a bounded read on the
# created_at index; error_code itself has no index).
RECENT_CODES = 5000
# Search: at most this many conversions match one transaction ID.
TXID_LIMIT = 1000
OUTCOME_COLOURS = {
    "accepted": "#2e7d32",
    "status_changed": "#6a1b9a",
    "duplicate": "#8a6d00",
}


class InboundChannelFilter(ChannelFilter):
    """By method (``InboundRequest.channel``)."""

    parameter_name = field = "channel"


class NetworkFilter(admin.SimpleListFilter):
    """By affiliate network; the networks with requests in the log (an EXISTS probe each on
    the foreign key's index)."""

    title = "affiliate network"
    parameter_name = "network"

    def lookups(self, request, model_admin):
        probe = Exists(InboundRequest.objects.filter(network=OuterRef("pk")))
        rows = AffiliateNetwork.objects.filter(probe)
        with contextlib.suppress(ValueError):
            chosen = self.value()
            if chosen:
                rows = AffiliateNetwork.objects.filter(probe | Q(pk=int(chosen)))
        return [(str(pk), name) for pk, name in rows.order_by("name").values_list("pk", "name")]

    def queryset(self, request, queryset):
        try:
            return queryset.filter(network_id=int(self.value() or ""))
        except ValueError:
            return queryset


class ErrorCodeFilter(admin.SimpleListFilter):
    """By error code; the codes among the latest requests (bounded, see RECENT_CODES)."""

    title = "error code"
    parameter_name = "error"

    def lookups(self, request, model_admin):
        latest = InboundRequest.objects.order_by("-created_at").values_list(
            "error_code", flat=True
        )[:RECENT_CODES]
        codes = {code for code in latest if code}
        chosen = self.value()
        if chosen:
            codes.add(chosen)
        return [(code, code) for code in sorted(codes)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(error_code=self.value())
        return queryset


@admin.register(InboundRequest)
class InboundRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Conversions — In: the inbound log, read-only."""

    list_display = (
        "time",
        "channel",
        "network",
        "click_id_text",
        "outcome_label",
        "error_code",
        "response_status",
        "visit",
        "converted",
        "conversion_link",
    )
    list_filter = (
        "outcome",
        InboundChannelFilter,
        NetworkFilter,
        ErrorCodeFilter,
        ("created_at", DateTimeRangeFilter),
    )
    list_select_related = ("network",)
    # What a list page reads: never the query, body, user agent or detail texts.
    list_only = (
        "created_at",
        "channel",
        "network__name",
        "click_id",
        "outcome",
        "error_code",
        "response_status",
        "visit_at",
        "converted_at",
        "conversion_id",
    )
    ordering = ("-created_at", "-id")
    sortable_by = ("created_at",)
    list_per_page = 100
    list_max_show_all = 0
    show_facets = admin.ShowFacets.NEVER
    change_list_template = "admin/tracker/inboundrequest/change_list.html"
    search_fields = ("click_id",)  # shows the search box; the lookups are get_search_results
    search_help_text = (
        "Exact click ID or transaction ID (txid). In double quotes, text in the request "
        '("ord-7781"): slow on a big log, narrow it with a date range first.'
    )
    fields = (
        "created_at",
        "channel",
        "network",
        "click_id",
        "outcome",
        "response_status",
        "error_code",
        "detail",
        "conversion",
        "visit_at",
        "converted_at",
        "upload_row",
        "method",
        "endpoint",
        "query",
        "body",
        "ip",
        "user_agent",
    )
    readonly_fields = ("upload_row",)

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        if queryset.model is not self.model:  # the history page pages LogEntry rows
            return super().get_paginator(
                request, queryset, per_page, orphans, allow_empty_first_page
            )
        return LogPaginator(queryset, per_page, rows=lambda rows: rows.only(*self.list_only))

    def get_changelist(self, request, **kwargs):
        return LogChangeList

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": TITLE, **(extra_context or {})})

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if len(term) > 2 and term[0] == term[-1] == '"':
            text = term[1:-1]
            return queryset.filter(Q(query__contains=text) | Q(body__contains=text)), False
        query = Q(click_id=term)
        with contextlib.suppress(ValueError):
            query |= Q(click_id=str(uuid.UUID(term)))
        conversions = Conversion.objects.filter(txid=term).order_by().values("pk")[:TXID_LIMIT]
        return queryset.filter(query | Q(conversion_id__in=conversions)), False

    @admin.display(description="time", ordering="created_at")
    def time(self, obj: InboundRequest) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="click ID")
    def click_id_text(self, obj: InboundRequest) -> str:
        return format_html('<span style="font-family:monospace">{}</span>', obj.click_id)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_label(self, obj: InboundRequest) -> str:
        colour = OUTCOME_COLOURS.get(obj.outcome, "#c62828")
        return format_html('<b style="color:{}">{}</b>', colour, obj.get_outcome_display())

    @admin.display(description="visit time")
    def visit(self, obj: InboundRequest) -> str:
        return compact_time(obj.visit_at)

    @admin.display(description="conversion time")
    def converted(self, obj: InboundRequest) -> str:
        return compact_time(obj.converted_at)

    @admin.display(description="conversion")
    def conversion_link(self, obj: InboundRequest) -> str:
        if obj.conversion_id is None:
            return "-"
        url = reverse("admin:tracker_conversion_change", args=[obj.conversion_id])
        return format_html('<a href="{}">#{}</a>', url, obj.conversion_id)

    @admin.display(description="upload")
    def upload_row(self, obj: InboundRequest) -> str:
        if obj.upload_id is None:
            return "-"
        url = reverse("admin:tracker_conversionupload_change", args=[obj.upload_id])
        return format_html(
            '<a href="{}">upload #{}</a>, row {}', url, obj.upload_id, obj.row_number
        )
