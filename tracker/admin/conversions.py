"""Conversions (trace page, status changes) and rejection reasons."""

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.db import transaction
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import ngettext

from postbacks import macros
from tracker import services
from tracker.admin.base import ClickSearchMixin, ReadOnlyAdminMixin
from tracker.models import (
    Conversion,
    ConversionStatusChange,
    InboundRequest,
    RejectionReason,
)


class ConversionStatusForm(forms.Form):
    """The admin's status change: new status, rejection reason (for rejected), a note."""

    status = forms.ChoiceField(choices=Conversion.Status.choices)
    rejection_reason = forms.CharField(
        required=False,
        max_length=255,
        help_text="For rejected: a code from Rejection reasons (others are kept, flagged).",
    )
    note = forms.CharField(
        required=True,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why: kept with the change in the conversion's history.",
    )


@admin.register(Conversion)
class ConversionAdmin(ClickSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Conversions; each one's page is its trace (inbound requests, status changes, dedup
    decisions, planned deliveries and every attempt)."""

    list_display = (
        "id",
        "created_at",
        "click",
        "txid",
        "conversion_type",
        "status_label",
        "reason",
        "payout_text",
        "currency",
        "method",
    )
    list_filter = ("status", "conversion_type", "method", "rejection_reason_unknown")
    list_select_related = ("click",)
    click_prefix = "click__"
    txid_lookup = "txid"
    change_form_template = "admin/tracker/conversion/trace.html"
    actions = ["change_status"]
    fields = (
        "click",
        "txid",
        "conversion_type",
        "status",
        "reason",
        "payout_text",
        "currency",
        "network_payout_text",
        "params",
        "method",
        "created_at",
        "status_changed_at",
    )
    readonly_fields = ("reason", "payout_text", "network_payout_text", "created_at")

    @admin.display(description="network payout")
    def network_payout_text(self, obj: Conversion) -> str:
        return "-" if obj.network_payout is None else macros.format_value(obj.network_payout)

    def has_status_permission(self, request) -> bool:
        return request.user.has_perm("tracker.change_conversion")

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Conversion) -> str:
        colours = {"approved": "#2e7d32", "rejected": "#c62828", "refunded": "#6a1b9a"}
        return format_html(
            '<b style="color:{}">{}</b>', colours.get(obj.status, "#8a6d00"), obj.status
        )

    @admin.display(description="rejection reason", ordering="rejection_reason")
    def reason(self, obj: Conversion) -> str:
        if not obj.rejection_reason:
            return "-"
        if obj.rejection_reason_unknown:
            return format_html(
                '{} <span title="not in the list">⚠ unknown</span>', obj.rejection_reason
            )
        return obj.rejection_reason

    @admin.display(description="payout", ordering="payout")
    def payout_text(self, obj: Conversion) -> str:
        return macros.format_value(obj.payout)

    @admin.action(description="Change status of selected conversions…", permissions=["status"])
    def change_status(self, request, queryset):
        """Intermediate page: new status, reason and note; each change fires its rules."""
        form = ConversionStatusForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            changed = 0
            for conversion in queryset.select_related(
                "click__campaign", "click__offer__affiliate_network", "click__traffic_source"
            ):
                with transaction.atomic():
                    change = services.conversion_status_change(
                        conversion,
                        form.cleaned_data["status"],
                        source=ConversionStatusChange.Source.ADMIN,
                        rejection_reason=form.cleaned_data["rejection_reason"],
                        user=request.user,
                        note=form.cleaned_data["note"],
                    )
                changed += change is not None
            unchanged = queryset.count() - changed
            self.message_user(
                request,
                ngettext("%d conversion changed.", "%d conversions changed.", changed) % changed
                + (f" {unchanged} already had that status." if unchanged else ""),
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Change conversion status",
            "form": form,
            "conversions": queryset[:100],
            "count": queryset.count(),
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        }
        return TemplateResponse(request, "admin/tracker/conversion/change_status.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **self.trace(object_id)}
        )

    def trace(self, object_id: str) -> dict:
        """What the trace page shows, oldest first."""
        from postbacks.models import Delivery

        try:
            pk = int(object_id)
        except ValueError:
            return {}
        deliveries = (
            Delivery.objects.filter(conversion_id=pk)
            .select_related("rule")
            .prefetch_related("attempts")
            .order_by("created_at", "id")
        )
        return {
            "inbound_requests": InboundRequest.objects.filter(conversion_id=pk).order_by(
                "created_at", "id"
            ),
            "status_changes": ConversionStatusChange.objects.filter(conversion_id=pk)
            .select_related("user", "inbound_request")
            .order_by("created_at", "id"),
            "deliveries": deliveries,
            "status_form": ConversionStatusForm(),
            "reasons": dict(RejectionReason.objects.values_list("code", "label")),
        }


@admin.register(RejectionReason)
class RejectionReasonAdmin(admin.ModelAdmin):
    """The rejection reasons rules can fire on; codes as the networks send them."""

    list_display = ("code", "label", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("code", "label")
