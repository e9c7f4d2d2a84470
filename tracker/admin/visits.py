"""Clicks and impressions: read-only visit lists."""

from django.contrib import admin

from tracker.admin.base import ClickSearchMixin, ReadOnlyAdminMixin
from tracker.models import Click, Impression


@admin.register(Click)
class ClickAdmin(ClickSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "campaign", "traffic_source", "external_id", "ip")
    list_filter = ("traffic_source", "campaign", "created_at")
    list_select_related = ("campaign", "traffic_source")
    search_help_text = "Exact click ID or external ID."
    date_hierarchy = "created_at"


@admin.register(Impression)
class ImpressionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "campaign", "traffic_source", "external_id", "ip")
    list_filter = ("traffic_source", "campaign")
    list_select_related = ("campaign", "traffic_source")
    search_fields = ("=external_id",)
    search_help_text = "Exact external ID."
