"""Offers, landers and campaigns (``/api/v1/offers/``, ``/landers/``, ``/campaigns/``)."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers, viewsets

from campaigns.api.common import ModelSerializer, NestedListSerializer, NestedRowSerializer
from campaigns.models import (
    Campaign,
    CampaignOffer,
    Lander,
    Offer,
)
from tracker import macros
from tracker.api.errors import ProtectedDeleteMixin

# --- offers and landers -----------------------------------------------------------------


class OfferSerializer(ModelSerializer):
    class Meta:
        model = Offer
        fields = (
            "id",
            "name",
            "affiliate_network",
            "url",
            "payout",
            "currency",
            "payout_mode",
            "is_active",
            "created_at",
        )


class OfferViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Offers: landing destinations paid per conversion.

    `url`: an http(s) URL with `{click_id}` or `{cf_click_id}` where the network stores our
    click ID. `payout`: a decimal text (6 decimals) in `currency` (ISO 4217, e.g. USD);
    `payout_mode` `auto` (the network's payout, `payout` when it sends none) or `manual`
    (always `payout`). `affiliate_network`: id or null. Filters: `name`,
    `affiliate_network`, `currency`, `payout_mode`, `is_active`. Errors: 400 `invalid` with
    field errors; DELETE of an offer in a campaign: 409 `protected`.
    """

    queryset = Offer.objects.all()
    serializer_class = OfferSerializer
    filterset_fields = ("name", "affiliate_network", "currency", "payout_mode", "is_active")


class LanderSerializer(ModelSerializer):
    class Meta:
        model = Lander
        fields = ("id", "name", "url", "is_active", "created_at")

    def validate_url(self, value: str) -> str:
        url = value.strip()
        errors, _warnings = macros.validate(url, context="url")
        if errors:
            raise serializers.ValidationError(errors)
        return url


class LanderViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Landers (pre-landers) shown before the offer.

    `url`: an http(s) URL with `{click_id}` where the page expects our click ID (other click
    macros allowed); its call-to-action links to `<TRACKER_BASE_URL>/lp/click`. Filters:
    `name`, `is_active`. Errors: 400 `invalid` with field errors; DELETE of a lander used by
    a campaign: 409 `protected`.
    """

    queryset = Lander.objects.all()
    serializer_class = LanderSerializer
    filterset_fields = ("name", "is_active")


# --- campaigns --------------------------------------------------------------------------


class CampaignOfferSerializer(NestedRowSerializer):
    parent_field = "campaign"

    class Meta:
        model = CampaignOffer
        fields = ("offer", "weight")


class CampaignSerializer(NestedListSerializer):
    nested = {"offers": "campaign_offers"}
    offers = CampaignOfferSerializer(
        source="campaign_offers",
        many=True,
        required=False,
        help_text="The offers in rotation with their weights (1..10000, relative share of "
        "clicks), each offer once. Sent: replaces the rotation; not sent (PATCH): unchanged.",
    )
    fallback_url = serializers.CharField(
        max_length=Campaign._meta.get_field("fallback_url").max_length,
        required=False,
        allow_blank=True,
        help_text="Where visitors go while the campaign is paused or has no active offer; "
        "without a scheme read as https://. Blank: 404 while paused, 503 without an offer.",
    )
    tracking_url = serializers.SerializerMethodField(
        help_text="The URL to paste into the traffic source (its macros left verbatim)."
    )

    class Meta:
        model = Campaign
        fields = (
            "id",
            "name",
            "key",
            "traffic_source",
            "is_active",
            "lander",
            "fallback_url",
            "offers",
            "tracking_url",
            "created_at",
        )

    def get_tracking_url(self, obj: Campaign) -> str:
        return obj.tracking_url()

    def validate_fallback_url(self, value: str) -> str:
        field = forms.URLField(
            required=False,
            max_length=Campaign._meta.get_field("fallback_url").max_length,
            assume_scheme="https",
        )
        try:
            return field.clean(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_offers(self, value: list[dict]) -> list[dict]:
        ids = [row["offer"].pk for row in value]
        twice = sorted({pk for pk in ids if ids.count(pk) > 1})
        if twice:
            raise serializers.ValidationError(f"Offer {twice[0]} is listed more than once.")
        return value


class CampaignViewSet(ProtectedDeleteMixin, viewsets.ModelViewSet):
    """Campaigns: a traffic source plus weighted offers; visitors enter through
    `tracking_url` (read-only, `<TRACKER_BASE_URL>/c/<key>?...`).

    `key` (slug, generated when not sent) appears in the tracking URL: changing it breaks
    live links. `offers`: `[{offer: id, weight: 1..10000}]`; writing it replaces the
    rotation. `is_active` false pauses the campaign (visitors go to `fallback_url`, else
    404). `lander`: id or null. Filters: `name`, `key`, `traffic_source`, `lander`,
    `is_active`. Errors: 400 `invalid` with field errors (a bad offer row:
    `{"offers": {"<index>": {field: [...]}}}`); DELETE of a campaign with clicks:
    409 `protected`.
    """

    queryset = Campaign.objects.select_related("traffic_source").prefetch_related(
        "traffic_source__parameters", "campaign_offers"
    )
    serializer_class = CampaignSerializer
    filterset_fields = ("name", "key", "traffic_source", "lander", "is_active")
