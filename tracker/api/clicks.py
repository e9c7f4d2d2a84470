"""The clicks resource of the REST API (``/api/v1/clicks/``): read-only, cursor-paginated,
filtered by campaign, traffic source, external ID and creation time."""

from __future__ import annotations

import django_filters
from rest_framework import serializers, viewsets

from tracker.api.base import LogCursorPagination
from tracker.api.filters import CreatedRangeFilterSet
from tracker.models import VAR_FIELDS, Click, DeviceType

ENRICHMENT_FIELDS = (
    "ip",
    "user_agent",
    "referrer",
    "country_code",
    "country_name",
    "region",
    "city",
    "isp",
    "asn",
    "carrier",
    "connection_type",
    "device_type",
    "device_brand",
    "device_model",
    "os",
    "os_version",
    "browser",
    "browser_version",
    "is_bot",
    "language",
    "referrer_domain",
)


class ClickSerializer(serializers.ModelSerializer):
    campaign_name = serializers.CharField(source="campaign.name", read_only=True)
    traffic_source_name = serializers.CharField(source="traffic_source.name", read_only=True)
    offer_name = serializers.CharField(source="offer.name", read_only=True, allow_null=True)
    # Blank when the user agent was missing: declared so the schema's enum includes "".
    device_type = serializers.ChoiceField(
        choices=DeviceType.choices, allow_blank=True, read_only=True
    )

    class Meta:
        model = Click
        fields = (
            "id",
            "created_at",
            "campaign",
            "campaign_name",
            "traffic_source",
            "traffic_source_name",
            "offer",
            "offer_name",
            "lander",
            "lander_clicked_at",
            "external_id",
            *VAR_FIELDS,
            *ENRICHMENT_FIELDS,
        )
        read_only_fields = fields


class ClickFilter(CreatedRangeFilterSet):
    id = django_filters.UUIDFilter(field_name="id", label="Click ID (exact).")
    campaign = django_filters.NumberFilter(field_name="campaign_id", label="Campaign ID.")
    traffic_source = django_filters.NumberFilter(
        field_name="traffic_source_id", label="Traffic source ID."
    )
    offer = django_filters.NumberFilter(field_name="offer_id", label="Offer ID.")
    external_id = django_filters.CharFilter(label="External ID (exact).")
    country_code = django_filters.CharFilter(label="ISO 3166-1 alpha-2 code, e.g. US.")
    device_type = django_filters.ChoiceFilter(choices=DeviceType.choices)
    os = django_filters.CharFilter(label="Operating system (exact), e.g. Android.")
    is_bot = django_filters.BooleanFilter()

    class Meta:
        model = Click
        fields: list[str] = []


class ClickCursorPagination(LogCursorPagination):
    """Clicks newest first by creation time (their UUID primary keys are not ordered by
    time): clicks arriving while pages are read come before page one, never into a later
    page."""

    ordering = ("-created_at", "-id")


class ClickViewSet(viewsets.ReadOnlyModelViewSet):
    """Clicks (visits through a campaign tracking URL), newest first.

    The click ID is a UUID. ``campaign``, ``traffic_source``, ``offer`` and ``lander`` are
    IDs (with the names alongside); enrichment fields (geo from the IP, device, OS and
    browser from the user agent) are "" or null when unknown. ``asn`` is an integer.

    Cursor pagination (``?page_size=``, default 50, at most 500; follow ``next``): stable
    while clicks arrive. Filters: ``created_after`` / ``created_before`` (ISO 8601),
    ``campaign``, ``traffic_source``, ``offer``, ``external_id`` (exact), ``id`` (click ID),
    ``country_code``, ``device_type``, ``os``, ``is_bot``.
    Errors: 400 ``invalid`` (bad filter value), 401, 403 (needs ``tracker.view_click``),
    404 ``not_found``.
    """

    queryset = Click.objects.select_related("campaign", "traffic_source", "offer")
    serializer_class = ClickSerializer
    pagination_class = ClickCursorPagination
    filterset_class = ClickFilter
