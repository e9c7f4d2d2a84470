"""The inbound conversion log of the REST API (``/api/v1/inbound-requests/``): every
conversion request received, accepted or refused, read-only."""

from __future__ import annotations

from typing import Any

import django_filters
from rest_framework import serializers, viewsets

from postbacks.masking import mask_secrets
from tracker.api.base import TimeCursorPagination
from tracker.api.filters import CreatedRangeFilterSet
from tracker.models import InboundRequest


class InboundRequestSerializer(serializers.ModelSerializer):
    class Meta:
        model = InboundRequest
        fields = (
            "id",
            "created_at",
            "channel",
            "network",
            "click_id",
            "upload",
            "row_number",
            "visit_at",
            "converted_at",
            "endpoint",
            "method",
            "query",
            "body",
            "ip",
            "user_agent",
            "response_status",
            "outcome",
            "error_code",
            "detail",
            "conversion",
        )
        read_only_fields = fields

    def to_representation(self, instance: InboundRequest) -> dict[str, Any]:
        data = super().to_representation(instance)
        for name in ("query", "body"):
            data[name] = mask_secrets(data[name])
        return data


class InboundRequestFilter(CreatedRangeFilterSet):
    channel = django_filters.ChoiceFilter(choices=InboundRequest.Channel.choices)
    outcome = django_filters.ChoiceFilter(choices=InboundRequest.Outcome.choices)
    error_code = django_filters.CharFilter(label="Error code (exact), e.g. invalid_payout.")
    network = django_filters.NumberFilter(field_name="network_id", label="Affiliate network ID.")
    click_id = django_filters.CharFilter(label="Click ID as sent (exact).")

    class Meta:
        model = InboundRequest
        fields: list[str] = []


class InboundRequestViewSet(viewsets.ReadOnlyModelViewSet):
    """The inbound conversion log: every conversion that tried to enter by any method
    (``channel``: s2s, pixel, script, upload, api, admin), accepted or not, with the
    answer given (``response_status``, ``outcome``, ``error_code``, ``detail``) and the
    conversion matched. Query and body are kept up to 4,000 characters, the network token
    masked. Newest first, cursor pagination (``?page_size=``, default 50, at most 500).

    Filters: ``channel``, ``outcome``, ``error_code``, ``network``, ``click_id``,
    ``created_after`` / ``created_before`` (ISO 8601). Needs
    ``tracker.view_inboundrequest``.
    """

    queryset = InboundRequest.objects.all()
    serializer_class = InboundRequestSerializer
    pagination_class = TimeCursorPagination  # created_at (indexed), then id
    filterset_class = InboundRequestFilter
