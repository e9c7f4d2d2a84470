"""The inbound log ("Conversions — In"): every request to a conversion endpoint."""

from django.contrib import admin

from tracker.admin.base import ReadOnlyAdminMixin
from tracker.models import InboundRequest


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
