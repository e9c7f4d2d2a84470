"""Postback rules in admin: the rule form (macro picker, live preview, test button), the rule
list with its actions, and the banner for rules that disabled themselves. The list's filters
are in :mod:`~postbacks.admin.rule_filters`, the form's preview and test views in
:mod:`~postbacks.admin.rule_preview`.

The form's templates are checked by the rule's transport (``get_transport(kind).validate``):
errors block the save, warnings (no ``{externalid}``...) are shown after it. Deactivating a
rule, from the list or the form, and deleting one cancel its scheduled deliveries through
``services.rules_deactivate``; the confirmation pages say how many first.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import ngettext

from postbacks import services
from postbacks.admin.rule_filters import StateFilter, existing_choices_filter
from postbacks.admin.rule_preview import RulePreviewAdmin
from postbacks.masking import mask_header_lines, mask_secrets, secret_hint
from postbacks.models import PostbackRule, Trigger
from postbacks.rules import PostbackRuleForm, destination_host, human_seconds, source_vars
from tracker import currency, macros

logger = logging.getLogger(__name__)

# The template fields, as the read-only page shows them (secrets masked), by field name.
MASKED_DISPLAY = {
    "url_template": "url_template_masked",
    "body_template": "body_template_masked",
    "headers_template": "headers_template_masked",
}
TRIGGER_SHORT: dict[str, str] = {
    Trigger.CREATED: "on create",
    Trigger.CHANGED: "on change",
    Trigger.BOTH: "both",
}


@admin.register(PostbackRule)
class PostbackRuleAdmin(RulePreviewAdmin):
    form = PostbackRuleForm
    change_form_template = "admin/postbacks/postbackrule/change_form.html"
    change_list_template = "admin/postbacks/postbackrule/change_list.html"
    delete_confirmation_template = "admin/postbacks/postbackrule/delete_confirmation.html"
    delete_selected_confirmation_template = (
        "admin/postbacks/postbackrule/delete_selected_confirmation.html"
    )
    list_display = (
        "name",
        "type_label",
        "trigger_label",
        "destination",
        "statuses_label",
        "delay_label",
        "is_active",
        "auto_disabled",
    )
    list_filter = (
        StateFilter,
        existing_choices_filter("event_type", "type"),
        existing_choices_filter("trigger", "trigger"),
        existing_choices_filter("kind", "destination"),
        existing_choices_filter("http_method", "HTTP method"),
        ("traffic_sources", admin.RelatedOnlyFieldListFilter),
        ("affiliate_networks", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("name", "url_template")
    search_help_text = "Rule name or postback URL."
    autocomplete_fields = ("campaigns", "offers", "traffic_sources", "affiliate_networks")
    filter_horizontal = ("rejection_reasons",)
    readonly_fields = (
        "disabled_reason",
        "disabled_at",
        "consecutive_failures",
        "signing_state",
        *MASKED_DISPLAY.values(),
    )
    actions = ["enable", "disable", "acknowledge", "delete_selected"]
    save_on_top = False
    fieldsets = (
        ("Type & status", {"fields": ("name", "event_type", "is_active")}),
        (
            "Scope",
            {
                "fields": (
                    "traffic_sources",
                    "campaigns",
                    "offers",
                    "affiliate_networks",
                    "replaces_global",
                ),
                "description": "Leave a list empty to match all. With several lists filled, "
                "the event must match one choice in each.",
            },
        ),
        (
            "Firing conditions",
            {
                "fields": (
                    "statuses",
                    "trigger",
                    "conversion_types",
                    "rejection_reasons",
                    "first_only",
                    "delay_seconds",
                ),
                "description": "Statuses, trigger, conversion types, rejection reasons and "
                "first-only apply to conversion and event rules; impression and click rules "
                "use only the delay.",
            },
        ),
        (
            "Destination",
            {
                "fields": (
                    "kind",
                    "http_method",
                    "url_template",
                    "body_format",
                    "body_template",
                    "headers_template",
                    "field_mapping",
                    "account_id",
                    "access_token",
                    "clear_access_token",
                    "api_version",
                    "test_event_code",
                    "event_names",
                    "payout_currency",
                    "success_mode",
                    "success_pattern",
                    "timeout_seconds",
                ),
                "classes": ("pb-destination",),
                "description": "S2S postback: the traffic source's URL. CRM webhook: a "
                "signed JSON POST with a field mapping. Meta / TikTok: their conversion "
                "APIs, from the pixel ID and access token. Telegram, Slack, Discord: a "
                "message to a chat or channel. Only the fields of the chosen kind are shown.",
            },
        ),
        (
            "Signing (Standard Webhooks)",
            {
                "fields": ("signing_state", "new_signing_secret", "stop_signing"),
                "classes": ("pb-signing",),
                "description": "Signed requests carry webhook-id, webhook-timestamp and "
                "webhook-signature (HMAC-SHA256), which the receiver checks with the secret; "
                "see README, 'CRM webhooks and signing'. For S2S and CRM webhook rules.",
            },
        ),
        (
            "Retries & auto-disable",
            {"fields": ("max_attempts", "retry_base_seconds", "disable_after_failures")},
        ),
    )
    status_fieldset = (
        "Status: deactivated automatically",
        {
            "fields": ("disabled_reason", "disabled_at", "consecutive_failures"),
            "description": "Tick 'active' (or use the list's Enable action) once the "
            "destination works again; the rule list shows a banner until acknowledged.",
            "classes": ("pb-status",),
        },
    )

    # --- form --------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: PostbackRule | None = None) -> Any:
        fieldsets: list[Any] = list(super().get_fieldsets(request, obj))
        if obj is not None and not obj.is_active and obj.disabled_at is not None:
            fieldsets.insert(1, self.status_fieldset)
        if obj is not None and not self.has_change_permission(request, obj):
            # Read-only page: the templates are shown with their secrets masked.
            fieldsets = [
                (name, {**opts, "fields": [MASKED_DISPLAY.get(f, f) for f in opts["fields"]]})
                for name, opts in fieldsets
            ]
        return fieldsets

    @admin.display(description="URL template")
    def url_template_masked(self, obj: PostbackRule) -> str:
        return mask_secrets(obj.url_template)

    @admin.display(description="body template")
    def body_template_masked(self, obj: PostbackRule) -> str:
        return mask_secrets(obj.body_template)

    @admin.display(description="headers template")
    def headers_template_masked(self, obj: PostbackRule) -> str:
        return mask_header_lines(obj.headers_template)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: PostbackRule | None = None,
    ) -> HttpResponse:
        context.update(
            editable=add or self.has_change_permission(request, obj),
            macro_catalogue=macros.catalogue(),
            source_vars=source_vars(),
            **self.preview_urls(request, obj),
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request: HttpRequest, obj: PostbackRule, form: Any, change: bool) -> None:
        deactivated = change and "is_active" in form.changed_data and not obj.is_active
        if change and "is_active" in form.changed_data and obj.is_active:
            obj.clear_failures()
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("stop_signing"):
            services.stop_signing(obj)
        if form.cleaned_data.get("new_signing_secret"):
            self._show_new_secret(request, obj)
        if deactivated:
            cancelled = services.rules_deactivate([obj.pk], **self._reason(request, "deactivated"))
            self.message_user(
                request,
                "Rule deactivated: "
                + ngettext(
                    "%d scheduled delivery cancelled.",
                    "%d scheduled deliveries cancelled.",
                    cancelled,
                )
                % cancelled,
                messages.INFO,
            )
        for warning in getattr(form, "validation_warnings", []):
            self.message_user(request, f"{obj.name}: {warning}", messages.WARNING)
        if obj.payout_currency and currency.missing_rates(obj.payout_currency):
            self.message_user(
                request,
                f"{obj.name}: no {obj.payout_currency} exchange rate yet (Tracking > Exchange "
                f"rates): {{payout}} is sent unconverted, in the conversion's currency, until "
                "one is added.",
                messages.WARNING,
            )

    def _show_new_secret(self, request: HttpRequest, obj: PostbackRule) -> None:
        secret = services.rotate_signing_secret(obj)
        until = obj.previous_secret_expires_at
        kept = f" The previous secret also signs until {until:%Y-%m-%d %H:%M} UTC." if until else ""
        self.message_user(
            request,
            f"Signing secret for {obj.name}: {secret} — copy it into the receiver now, it is "
            f"not shown again.{kept}",
            messages.SUCCESS,
        )

    @admin.display(description="signing")
    def signing_state(self, obj: PostbackRule | None) -> str:
        """Whether requests are signed, with the secret's last characters only."""
        if obj is None or not obj.signing_secret:
            return "Not signed."
        text = f"Signed with whsec_{secret_hint(obj.signing_secret)}."
        until = obj.previous_secret_until()
        if until is not None:
            text += (
                f" The previous secret ({secret_hint(obj.previous_signing_secret)}) also "
                f"signs until {until:%Y-%m-%d %H:%M} UTC."
            )
        return text

    # --- delete: say how many scheduled deliveries go, then cancel them -----------------

    def render_delete_form(self, request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
        obj = context.get("object")
        if obj is not None:
            context["waiting_deliveries"] = services.rules_waiting_count([obj.pk])
        return super().render_delete_form(request, context)

    def delete_model(self, request: HttpRequest, obj: PostbackRule) -> None:
        self._cancel_before_delete(request, [obj.pk])
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PostbackRule]) -> None:
        self._cancel_before_delete(request, list(queryset.values_list("pk", flat=True)))
        super().delete_queryset(request, queryset)

    def _cancel_before_delete(self, request: HttpRequest, ids: list[int]) -> None:
        cancelled = services.rules_deactivate(ids, **self._reason(request, "deleted"))
        if cancelled:
            self.message_user(
                request,
                ngettext(
                    "%d scheduled delivery cancelled.",
                    "%d scheduled deliveries cancelled.",
                    cancelled,
                )
                % cancelled,
                messages.INFO,
            )

    @staticmethod
    def _reason(request: HttpRequest, what: str) -> dict[str, str]:
        """``rules_deactivate``'s reason and who: recorded in each cancelled delivery."""
        return {"reason": f"the rule was {what}.", "by": f"{request.user.get_username()} (admin)"}

    # --- list ----------------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        attention = PostbackRule.objects.filter(needs_attention=True).order_by("-disabled_at")
        extra_context = {
            **(extra_context or {}),
            "attention_rules": list(attention[:50]),
            "can_acknowledge": self.has_change_permission(request),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return super().changelist_view(request, extra_context)

    @admin.display(description="type", ordering="event_type")
    def type_label(self, obj: PostbackRule) -> str:
        return obj.event_type

    @admin.display(description="trigger", ordering="trigger")
    def trigger_label(self, obj: PostbackRule) -> str:
        if not obj.conditions_apply:
            return "-"
        return TRIGGER_SHORT.get(obj.trigger, obj.trigger)

    @admin.display(description="destination")
    def destination(self, obj: PostbackRule) -> str:
        host = destination_host(obj.url_template) or "?"
        return f"{obj.http_method} {host}"

    @admin.display(description="statuses")
    def statuses_label(self, obj: PostbackRule) -> str:
        if not obj.conditions_apply:
            return "-"
        return ", ".join(obj.statuses) if obj.statuses else "any"

    @admin.display(description="delay", ordering="delay_seconds")
    def delay_label(self, obj: PostbackRule) -> str:
        return human_seconds(obj.delay_seconds)

    @admin.display(description="auto-disabled", ordering="-needs_attention")
    def auto_disabled(self, obj: PostbackRule) -> str:
        if obj.is_active or obj.disabled_at is None:
            return ""
        label = "needs attention" if obj.needs_attention else "yes"
        return format_html(
            '<span class="pb-flag{}" title="{}">{}</span>',
            " pb-flag-attention" if obj.needs_attention else "",
            obj.disabled_reason,
            label,
        )

    # --- actions -------------------------------------------------------------------------

    @admin.action(description="Enable selected rules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[PostbackRule]) -> None:
        count = services.rules_enable(queryset.values_list("pk", flat=True))
        self.message_user(request, ngettext("%d rule enabled.", "%d rules enabled.", count) % count)

    @admin.action(
        description="Disable selected rules (cancels their scheduled deliveries)",
        permissions=["change"],
    )
    def disable(
        self, request: HttpRequest, queryset: QuerySet[PostbackRule]
    ) -> TemplateResponse | None:
        rules = list(queryset.order_by("name"))
        ids = [rule.pk for rule in rules]
        if request.POST.get("post") == "yes":
            cancelled = services.rules_deactivate(ids, **self._reason(request, "disabled"))
            self.message_user(
                request,
                ngettext("%d rule disabled", "%d rules disabled", len(ids)) % len(ids)
                + ", "
                + ngettext(
                    "%d scheduled delivery cancelled.",
                    "%d scheduled deliveries cancelled.",
                    cancelled,
                )
                % cancelled,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Disable postback rules",
            "subtitle": None,
            "opts": self.opts,
            "rules": rules,
            "waiting_deliveries": services.rules_waiting_count(ids),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/postbacks/postbackrule/disable_confirmation.html", context
        )

    @admin.action(description="Acknowledge auto-disable (hide the banner)", permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[PostbackRule]) -> None:
        count = services.rules_acknowledge(queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            ngettext("%d rule acknowledged.", "%d rules acknowledged.", count) % count,
        )

    @admin.action(
        description="Delete selected rules (cancels their scheduled deliveries)",
        permissions=["delete"],
    )
    def delete_selected(
        self, request: HttpRequest, queryset: QuerySet[PostbackRule]
    ) -> HttpResponse | None:
        response = django_delete_selected(self, request, queryset)
        if isinstance(response, TemplateResponse) and response.context_data is not None:
            ids = list(queryset.values_list("pk", flat=True))
            response.context_data["waiting_deliveries"] = services.rules_waiting_count(ids)
        return response
