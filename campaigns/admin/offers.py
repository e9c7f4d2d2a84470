"""Offers, landers and campaigns in admin."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from campaigns.models import (
    Campaign,
    CampaignOffer,
    Lander,
    Offer,
)
from tracker import macros


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    list_display = ("name", "affiliate_network", "payout", "currency", "payout_mode", "is_active")
    list_filter = ("payout_mode", "is_active", "affiliate_network")
    search_fields = ("name", "url")
    list_select_related = ("affiliate_network",)


def _lp_click_url() -> str:
    return f"{settings.TRACKER_BASE_URL.rstrip('/')}/lp/click"


class LanderForm(forms.ModelForm):
    class Meta:
        model = Lander
        fields = ("name", "url", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "url" not in self.fields:  # a read-only page (view permission only)
            return
        self.fields["url"].help_text = format_html(
            "Where visitors land first, with <code>{{click_id}}</code> where the page expects "
            "our click ID, e.g. <code>https://lander.example/?cid={{click_id}}</code>; other "
            "click macros work too (<code>{{externalid}}</code>, <code>{{var1}}</code>...). "
            "The page's call-to-action links to <code>{}?click_id=</code>&lt;the click ID&gt;, "
            "or to plain <code>{}</code> (the click-ID cookie is read then), which sends the "
            "visitor on to the offer.",
            _lp_click_url(),
            _lp_click_url(),
        )

    def clean_url(self) -> str:
        url = self.cleaned_data["url"].strip()
        errors, _warnings = macros.validate(url, context="url")
        if errors:
            raise ValidationError(errors)
        return url


@admin.register(Lander)
class LanderAdmin(admin.ModelAdmin):
    form = LanderForm
    list_display = ("name", "url_code", "is_active", "campaign_count", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "url")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(campaign_count=Count("campaigns"))

    @admin.display(description="lander URL", ordering="url")
    def url_code(self, obj: Lander) -> str:
        return format_html("<code>{}</code>", obj.url)

    @admin.display(description="campaigns", ordering="campaign_count")
    def campaign_count(self, obj: Lander) -> int:
        return obj.campaign_count  # type: ignore[attr-defined]  # annotated by get_queryset


class CampaignOfferInline(admin.TabularInline):
    model = CampaignOffer
    extra = 1
    autocomplete_fields = ("offer",)


class CampaignForm(forms.ModelForm):
    fallback_url = forms.URLField(
        label="Fallback URL",
        required=False,
        max_length=Campaign._meta.get_field("fallback_url").max_length,
        assume_scheme="https",
    )

    class Meta:
        model = Campaign
        fields = ("name", "traffic_source", "key", "is_active", "lander", "fallback_url")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A read-only page (view permission only) builds the form without its fields.
        self.set_help_text(
            "lander",
            format_html(
                "Optional. With a lander, the tracking URL records the click (offer chosen as "
                "usual) and sends the visitor to the lander with the click ID filled in; the "
                "lander's call-to-action links to <code>{}</code>, which sends the visitor on to "
                "the click's offer. An inactive lander is skipped: visitors go straight to the "
                "offer.",
                _lp_click_url(),
            ),
        )
        self.set_help_text(
            "is_active",
            "Untick to pause: clicks are no longer recorded, visitors go to the fallback URL "
            "(or get 404 unknown_campaign without one).",
        )
        self.set_help_text(
            "fallback_url",
            "Where visitors go while the campaign is paused or has no active offer (and from "
            "a lander whose click cannot be found), e.g. your own site. Blank: 404 while "
            "paused, 503 no_offer without an active offer.",
        )

    def set_help_text(self, name: str, text: str) -> None:
        if name in self.fields:
            self.fields[name].help_text = text


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ("name", "key", "traffic_source", "state", "lander", "tracking_link")
    list_filter = (("is_active", admin.BooleanFieldListFilter), "traffic_source", "lander")
    search_fields = ("name", "key")
    list_select_related = ("traffic_source", "lander")
    readonly_fields = ("tracking_link",)
    fieldsets = (
        (None, {"fields": ("name", "traffic_source", "key", "tracking_link")}),
        ("Visitors' path", {"fields": ("is_active", "lander", "fallback_url")}),
    )
    inlines = [CampaignOfferInline]
    actions = ["pause", "resume"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("traffic_source__parameters")

    @admin.display(description="tracking URL")
    def tracking_link(self, obj: Campaign) -> str:
        if not obj.pk:
            return "Shown once the campaign is saved."
        return format_html("<code>{}</code>", obj.tracking_url())

    @admin.display(description="state", ordering="is_active")
    def state(self, obj: Campaign) -> str:
        if obj.is_active:
            return "Active"
        if obj.fallback_url:
            return format_html(
                '<strong class="campaign-paused">Paused</strong>: visitors go to <code>{}</code>',
                obj.fallback_url,
            )
        return mark_safe(
            '<strong class="campaign-paused">Paused</strong>: visitors get 404 (no fallback URL)'
        )

    def save_model(
        self, request: HttpRequest, obj: Campaign, form: forms.Form, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if not obj.is_active and not obj.fallback_url:
            self.message_user(
                request,
                f"“{obj}” is paused without a fallback URL: its visitors get 404.",
                messages.WARNING,
            )
        if obj.lander is not None and not obj.lander.is_active:
            self.message_user(
                request,
                f"The lander “{obj.lander}” is inactive: visitors go straight to the offer.",
                messages.WARNING,
            )

    @admin.action(description="Pause selected campaigns", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, active=False)

    @admin.action(description="Resume selected campaigns", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, active=True)

    def _set_active(self, request: HttpRequest, queryset: QuerySet, *, active: bool) -> None:
        # save() rather than update(): the signals clear the per-process campaign cache.
        changed = [campaign for campaign in queryset if campaign.is_active != active]
        for campaign in changed:
            campaign.is_active = active
            campaign.save(update_fields=["is_active"])
        verb = "resumed" if active else "paused"
        self.message_user(request, f"{len(changed)} campaign(s) {verb}.", messages.SUCCESS)
