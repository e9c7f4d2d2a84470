"""Conversion types: which ones allow several conversions per click without a txid."""

from django.contrib import admin

from tracker.models import ConversionType


@admin.register(ConversionType)
class ConversionTypeAdmin(admin.ModelAdmin):
    """Types as networks send them in ``ct``; unlisted types are accepted and allow one per
    click."""

    list_display = ("code", "label", "allow_multiple")
    list_editable = ("allow_multiple",)
    list_filter = ("allow_multiple",)
    search_fields = ("code", "label")

    def save_model(self, request, obj, form, change) -> None:
        obj.code = obj.code.strip().lower()
        super().save_model(request, obj, form, change)
