import contextlib
import uuid

from django.contrib import admin
from django.db.models import Q

from tracker.models import Click, Conversion, InboundRequest


class ReadOnlyAdminMixin:
    """Log tables: viewable and filterable, never edited by hand."""

    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ClickSearchMixin:
    """Search box for exact click ID, external ID or transaction ID, on indexed columns.

    ``click_prefix`` is the lookup path from the model to its Click ("" on Click itself);
    ``txid_lookup`` the path to the conversion's txid, or "" when the model has none.
    """

    click_prefix = ""
    txid_lookup = ""
    search_fields = ("click_id",)  # shows the search box; the lookups are below
    search_help_text = "Exact click ID, external ID or transaction ID (txid)."

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        query = Q(**{f"{self.click_prefix}external_id": term})
        if self.txid_lookup:
            query |= Q(**{self.txid_lookup: term})
        with contextlib.suppress(ValueError):
            query |= Q(**{f"{self.click_prefix}pk": uuid.UUID(term)})
        return queryset.filter(query), False


@admin.register(Click)
class ClickAdmin(ClickSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "campaign", "traffic_source", "external_id", "ip")
    list_filter = ("traffic_source", "campaign", "created_at")
    list_select_related = ("campaign", "traffic_source")
    search_help_text = "Exact click ID or external ID."
    date_hierarchy = "created_at"


@admin.register(Conversion)
class ConversionAdmin(ClickSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "click",
        "txid",
        "conversion_type",
        "status",
        "payout",
        "currency",
    )
    list_filter = ("status", "conversion_type", "method", "created_at")
    list_select_related = ("click",)
    click_prefix = "click__"
    txid_lookup = "txid"
    date_hierarchy = "created_at"


@admin.register(InboundRequest)
class InboundRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "method",
        "endpoint",
        "response_status",
        "outcome",
        "error_code",
        "ip",
    )
    list_filter = ("outcome", "error_code", "response_status", "endpoint", "created_at")
    search_fields = ("query",)
    search_help_text = "Text in the query string, e.g. a click ID or txid."
    date_hierarchy = "created_at"
