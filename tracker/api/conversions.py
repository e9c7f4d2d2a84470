"""The conversions resource of the REST API (``/api/v1/conversions/``): list and read,
create through the same door as ``/cv`` (``tracker.ingest``), status changes, the Google
Ads offline-conversion export."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import django_filters
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import RawPostDataException, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import exceptions, parsers, renderers, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response

from campaigns.models import status_from_text
from postbacks.masking import mask_secrets
from tracker import google_ads, ingest, permissions, services
from tracker.api.base import ModelPermissions, StrictSerializer, TimeCursorPagination
from tracker.api.errors import BodyTooLarge, DomainError, TrackerErrorSerializer, error_responses
from tracker.api.filters import CreatedRangeFilterSet
from tracker.api.parsers import ExactJSONParser
from tracker.forms import PARAM_FIELDS
from tracker.models import Conversion, ConversionStatusChange, InboundRequest
from tracker.remote import client_ip

LOG_TEXT_MAX = 4000
# The parameters POST /conversions/ takes: those of /cv, by our names (no network token:
# the API is a trusted channel).
CONVERSION_FIELDS = (
    "click_id",
    "payout",
    "txid",
    "ct",
    "status",
    "rejection_reason",
    "currency",
    "payout_currency",
    "timestamp",
    "test",
    *PARAM_FIELDS,
)


@extend_schema_field(
    {"type": "string", "enum": Conversion.Status.values, "description": "Conversion status."}
)
class ConversionStatusField(serializers.CharField):
    """The conversion status, documented inline (its choice set is shared with the rules'
    ``statuses``, which name the component)."""


class ConversionSerializer(serializers.ModelSerializer):
    status = ConversionStatusField(read_only=True)
    campaign = serializers.IntegerField(source="click.campaign_id", read_only=True)
    traffic_source = serializers.IntegerField(source="click.traffic_source_id", read_only=True)
    offer = serializers.IntegerField(source="click.offer_id", read_only=True, allow_null=True)

    class Meta:
        model = Conversion
        fields = (
            "id",
            "click",
            "campaign",
            "traffic_source",
            "offer",
            "txid",
            "conversion_type",
            "status",
            "rejection_reason",
            "rejection_reason_unknown",
            "payout",
            "currency",
            "display_payout",
            "display_currency",
            "exchange_rate",
            "network_payout",
            "params",
            "method",
            "is_test",
            "converted_at",
            "created_at",
            "status_changed_at",
        )
        read_only_fields = fields


class ConversionCreateSerializer(serializers.Serializer):
    """The /cv parameters by our names (documentation of ``POST /conversions/``; the
    values are validated by the same form as /cv)."""

    click_id = serializers.CharField(help_text="The click ID (UUID). Required.")
    payout = serializers.CharField(
        required=False,
        help_text="Decimal (string or number), rounded half-up to 6 places, |payout| < 1e9. "
        "Default: the offer's payout rules.",
    )
    txid = serializers.CharField(required=False, help_text="Transaction ID, <= 255 chars.")
    ct = serializers.CharField(required=False, help_text="Conversion type, e.g. lead, sale.")
    status = serializers.CharField(
        required=False,
        help_text="approved (default), pending, rejected, refunded, any case; aliases such as "
        "chargeback. A repeat with another status is a status change.",
    )
    rejection_reason = serializers.CharField(required=False, help_text="A code, e.g. fraud.")
    currency = serializers.CharField(required=False, help_text="ISO 4217, e.g. EUR.")
    payout_currency = serializers.CharField(
        required=False, help_text="ISO 4217; wins over currency."
    )
    timestamp = serializers.CharField(
        required=False, help_text="When it converted: Unix seconds or ISO 8601."
    )
    test = serializers.CharField(required=False, help_text="1/0 or true/false.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for name in PARAM_FIELDS:
            fields[name] = serializers.CharField(required=False, help_text="<= 1000 chars.")
        return fields


class IngestResultSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="ok (new), duplicate or status_changed.")
    conversion_id = serializers.IntegerField()
    test = serializers.BooleanField(required=False, help_text="Present (true) for a test.")
    previous_status = serializers.CharField(required=False, help_text="For status_changed.")
    new_status = serializers.CharField(required=False, help_text="For status_changed.")


class StatusChangeSerializer(StrictSerializer):
    status = serializers.CharField(
        max_length=64,
        help_text="approved, pending, rejected or refunded (any case; aliases such as chargeback).",
    )
    rejection_reason = serializers.CharField(
        max_length=255, required=False, allow_blank=True, help_text="Kept for rejected only."
    )
    note = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, help_text="Why, for the trace."
    )


class StatusChangeResultSerializer(serializers.Serializer):
    status = serializers.CharField(
        help_text="status_changed, or unchanged: it already had that status; nothing fired.",
    )
    conversion_id = serializers.IntegerField()
    previous_status = serializers.CharField(required=False)
    new_status = serializers.CharField()
    rejection_reason = serializers.CharField(allow_blank=True)
    change_id = serializers.IntegerField(required=False, help_text="The status change record.")


class ConversionFilter(CreatedRangeFilterSet):
    status = django_filters.ChoiceFilter(choices=Conversion.Status.choices)
    method = django_filters.ChoiceFilter(choices=Conversion.Method.choices)
    conversion_type = django_filters.CharFilter(label="Conversion type (exact).")
    txid = django_filters.CharFilter(label="Transaction ID (exact).")
    click_id = django_filters.UUIDFilter(field_name="click_id", label="Click ID.")
    campaign = django_filters.NumberFilter(field_name="click__campaign_id", label="Campaign ID.")
    traffic_source = django_filters.NumberFilter(
        field_name="click__traffic_source_id", label="Traffic source ID."
    )
    offer = django_filters.NumberFilter(field_name="click__offer_id", label="Offer ID.")
    is_test = django_filters.BooleanFilter()

    class Meta:
        model = Conversion
        fields: list[str] = []


class GoogleAdsExportFilter(ConversionFilter):
    """The conversion list's filters that make sense for a period's export: the period is
    ``since``/``until``, the statuses ``status`` (repeatable), test conversions are always
    left out."""

    # None takes a parent's filter out (django-filter); the stubs want a filter.
    status = None  # type: ignore[assignment]
    created_after = None  # type: ignore[assignment]
    created_before = None  # type: ignore[assignment]
    is_test = None  # type: ignore[assignment]

    class Meta(ConversionFilter.Meta):
        pass


class CSVRenderer(renderers.BaseRenderer):
    """``text/csv``, so that ``Accept: text/csv`` is accepted by the CSV export (which
    answers a StreamingHttpResponse itself). Its errors are answered in JSON
    (:meth:`ConversionViewSet.finalize_response`); were a body rendered here, it would be
    JSON too."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return renderers.JSONRenderer().render(data, renderer_context=renderer_context)


GOOGLE_ADS_PARAMETERS = [
    OpenApiParameter(
        "since",
        str,
        required=True,
        description="First day or moment of the period, included: 2026-01-01 (midnight in "
        "time_zone) or ISO 8601 (2026-01-01T06:00, in time_zone without an offset). "
        "Conversions are picked by when they were received.",
    ),
    OpenApiParameter(
        "until",
        str,
        description="Day or moment after the period (excluded), as since; default: now.",
    ),
    OpenApiParameter(
        "conversion_name",
        str,
        required=True,
        many=True,
        explode=True,
        description="The Google Ads conversion action name, for every conversion type "
        "(Purchase) or for one type (sale=Purchase; * = the other types). Repeatable.",
    ),
    OpenApiParameter(
        "time_zone",
        str,
        default="UTC",
        description="Time zone of the Conversion Times and of since/until: an ID "
        "(Europe/Berlin) or a GMT offset (+0000).",
    ),
    OpenApiParameter(
        "status",
        str,
        many=True,
        explode=True,
        enum=Conversion.Status.values,
        description="Export conversions with this status; repeatable (default: approved).",
    ),
    # DRF's ?format= (json, csv) changes nothing here: the answer is the CSV file.
    OpenApiParameter("format", exclude=True),
]


class ConversionChangePermission(ModelPermissions):
    """POST needs ``change_conversion`` (a status change), not ``add``."""

    perms_map = {**ModelPermissions.perms_map, "POST": ["%(app_label)s.change_%(model_name)s"]}


def _request_body(request: Request) -> str:
    """The raw body as the inbound log keeps it (read before DRF parses it)."""
    try:
        raw = request._request.body[:LOG_TEXT_MAX]
    except (RequestDataTooBig, RawPostDataException):
        return f"(body not kept: {request.META.get('CONTENT_LENGTH') or 'unknown'} bytes)"
    return services.storable(raw.decode("utf-8", "replace"))


def _ingest_fields(data: Any) -> dict[str, str]:
    """The parsed body as /cv parameters (text). Raises ValueError naming the problem."""
    if not isinstance(data, Mapping):
        raise ValueError("The body must be a JSON object.")
    unknown = sorted(set(data) - set(CONVERSION_FIELDS))
    if unknown:
        raise ValueError(f"Unknown field(s): {', '.join(str(u)[:64] for u in unknown[:20])}.")
    fields = {}
    for key, value in data.items():
        if value is None:
            fields[key] = ""
        elif isinstance(value, bool):
            fields[key] = "true" if value else "false"
        elif isinstance(value, str | int):
            fields[key] = str(value)
        else:
            raise ValueError(f"{key} must be a string or a number.")
    return fields


def _unreadable(exc: exceptions.APIException | SuspiciousOperation) -> exceptions.APIException:
    """The API exception answering a body that could not be read: ``exc`` itself, 413
    ``body_too_large`` for a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, 400 ``parse_error``
    for Django's other refusals of a form (too many fields or files: else an HTML 400)."""
    if isinstance(exc, exceptions.APIException):
        return exc
    if isinstance(exc, RequestDataTooBig):
        return BodyTooLarge()
    return ParseError(f"Form parse error - {exc}")


def conversion_via_api(request: Request) -> ingest.Result:
    """Register the conversion in ``request`` (channel api) through :func:`ingest.conversion
    _ingest`. A body that is not an object of known fields is refused (400
    ``invalid_request``) and logged too; one that cannot be read (400 ``parse_error``, 415
    ``unsupported_media_type``, 413 ``body_too_large``) is logged, then raised for the error
    handler to answer (see :func:`_unreadable`)."""
    inbound = ingest.Inbound(
        channel=InboundRequest.Channel.API,
        endpoint=request.path,
        http_method=request.method or "",
        query=mask_secrets(request.META.get("QUERY_STRING", "")),
        body=mask_secrets(_request_body(request)),
        ip=client_ip(request._request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        user=request.user,
    )
    try:
        data = request.data
    except (exceptions.APIException, SuspiciousOperation) as exc:
        error = _unreadable(exc)
        codes = error.get_codes()
        code = codes if isinstance(codes, str) else getattr(error, "default_code", "error")
        ingest.record(inbound, ingest.error_result(error.status_code, code, str(error.detail)))
        if error is exc:
            raise
        raise error from None
    try:
        fields = _ingest_fields(data)
    except ValueError as exc:
        sent = data.get("click_id", "") if isinstance(data, Mapping) else ""
        result = ingest.error_result(400, "invalid_request", str(exc))
        return ingest.record(inbound, result, click_id=str(sent).strip())
    return permissions.conversion_ingest_as(request.user, fields, inbound)


def status_change(conversion: Conversion, data: Mapping[str, str], user: Any) -> dict:
    """Apply a status change from the API; the answer's body. Raises DomainError 400
    ``invalid_status``."""
    status = status_from_text(data["status"])
    if status is None:
        detail = (
            f"Unknown status {data['status'][:64]!r}: use {', '.join(Conversion.Status.values)}."
        )
        raise DomainError(400, "invalid_status", detail)
    change = services.conversion_status_change(
        conversion,
        status,
        source=ConversionStatusChange.Source.API,
        rejection_reason=data.get("rejection_reason", ""),
        user=user,
        note=data.get("note", ""),
    )
    if change is None:
        conversion.refresh_from_db()
        return {
            "status": "unchanged",
            "conversion_id": conversion.pk,
            "new_status": conversion.status,
            "rejection_reason": conversion.rejection_reason,
        }
    return {
        "status": "status_changed",
        "conversion_id": conversion.pk,
        "previous_status": change.old_status,
        "new_status": change.new_status,
        "rejection_reason": change.rejection_reason,
        "change_id": change.pk,
    }


@extend_schema_view(
    create=extend_schema(
        summary="Register a conversion (as /cv)",
        request=ConversionCreateSerializer,
        responses={
            201: OpenApiResponse(IngestResultSerializer, description="A new conversion (ok)."),
            200: OpenApiResponse(
                IngestResultSerializer, description="duplicate or status_changed."
            ),
            **error_responses(
                400,
                401,
                403,
                404,
                413,
                415,
                503,
                described={
                    400: "invalid_payout, invalid_click_id, missing_click_id, invalid_status, "
                    "invalid_timestamp, invalid_characters, invalid_request (unknown field, "
                    "a value not a string or number), parse_error (not JSON, a form with too "
                    "many fields)... Logged in the inbound log, as every answer but 401, "
                    "403 and 429.",
                    404: "unknown_click_id",
                    413: "body_too_large (logged, the body not kept)",
                    415: "unsupported_media_type: send application/json or a form (logged)",
                    503: "unavailable (retry later)",
                },
            ),
        },
    ),
    list=extend_schema(responses={200: ConversionSerializer, **error_responses(400, 401, 403)}),
    retrieve=extend_schema(responses={200: ConversionSerializer, **error_responses(401, 403, 404)}),
)
class ConversionViewSet(viewsets.ReadOnlyModelViewSet):
    """Conversions, newest first (cursor pagination: ``?page_size=``, default 50, at most
    500; follow ``next``).

    ``payout`` and the other amounts are decimal strings (6 places); ``campaign``,
    ``traffic_source`` and ``offer`` are the click's. Filters: ``created_after`` /
    ``created_before`` (ISO 8601), ``status``, ``method``, ``conversion_type``, ``txid``,
    ``click_id``, ``campaign``, ``traffic_source``, ``offer``, ``is_test``.

    ``POST /conversions/`` registers a conversion exactly as the S2S postback ``/cv`` does
    (same validation, deduplication, status change and inbound log; method ``api``; the
    network's IP and token checks do not apply). Body: a JSON object with ``click_id``,
    ``payout``, ``txid``, ``ct``, ``status``, ``rejection_reason``, ``currency`` /
    ``payout_currency``, ``timestamp``, ``test``, ``param1``..``param20``; any other field
    is refused. Answers 201 ``{"status": "ok", "conversion_id": n}``, 200 ``duplicate`` or
    ``status_changed`` (with ``previous_status``, ``new_status``), 400/404/503 with the /cv
    error codes. Each call past authentication and permission is in the inbound log
    (channel api), bodies that cannot be read included (400 ``parse_error``, 413
    ``body_too_large``, 415 ``unsupported_media_type``). Needs ``tracker.add_conversion``;
    a repeat that would change an existing conversion's status also needs
    ``tracker.change_conversion`` (else 403 ``permission_denied``, nothing changed, logged).

    ``POST /conversions/{id}/status/`` changes the status (``tracker.change_conversion``),
    firing the rules that fire on a status change.

    ``GET /conversions/google-ads/`` streams the Google Ads click-conversion upload CSV of
    the conversions received in a period, as ``manage.py export_google_ads`` writes it.
    """

    queryset = Conversion.objects.select_related("click")
    serializer_class = ConversionSerializer
    pagination_class = TimeCursorPagination  # created_at (indexed), then id
    filterset_class = ConversionFilter
    parser_classes = [ExactJSONParser, parsers.FormParser]

    def create(self, request: Request) -> Response:
        result = conversion_via_api(request)
        created = result.status == 200 and result.body.get("status") == "ok"
        return Response(result.body, status=201 if created else result.status)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        """Errors of the CSV export in JSON too, when the client asked for text/csv."""
        if isinstance(response, Response) and isinstance(
            getattr(request, "accepted_renderer", None), CSVRenderer
        ):
            request.accepted_renderer = renderers.JSONRenderer()
            request.accepted_media_type = renderers.JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        summary="Export for Google Ads (click-conversion upload CSV)",
        parameters=GOOGLE_ADS_PARAMETERS,
        filters=True,
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The upload file, streamed: Parameters:TimeZone=..., the header, "
                "one row per exported conversion (attachment google-ads-<since>-<until>.csv).",
            ),
            (400, "application/json"): OpenApiResponse(
                TrackerErrorSerializer,
                description="invalid: detail names the bad parameter (since, until, "
                "conversion_name, time_zone, status, or a filter).",
            ),
        },
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="google-ads",
        url_name="google-ads",
        filterset_class=GoogleAdsExportFilter,
        renderer_classes=[renderers.JSONRenderer, CSVRenderer],
        pagination_class=None,
    )
    def google_ads(self, request: Request) -> StreamingHttpResponse:
        """The Google Ads "Conversions from clicks" upload file of the conversions received
        (``created_at``) from ``since`` (included) to ``until`` (excluded, default now), as
        ``manage.py export_google_ads`` writes it (``tracker.google_ads``): approved ones
        unless ``status`` says otherwise; test conversions, those without a gclid, with a
        type that has no ``conversion_name``, or a negative payout are left out. Filters:
        ``campaign``, ``traffic_source``, ``offer``, ``conversion_type``, ``method``,
        ``txid``, ``click_id``. Streamed as it is read, so the counts of exported and
        left-out conversions are not given (the command and the admin action give them).
        Needs ``tracker.view_conversion``. 400 ``invalid`` naming the bad parameter."""
        params = request.query_params
        try:
            export = google_ads.parse_period_export(
                since=params.get("since"),
                until=params.get("until"),
                names=params.getlist("conversion_name"),
                time_zone=params.get("time_zone") or "UTC",
                statuses=params.getlist("status"),
            )
        except google_ads.OptionsError as exc:
            raise serializers.ValidationError({k: [v] for k, v in exc.errors.items()}) from None
        conversions = self.filter_queryset(self.get_queryset())
        response = StreamingHttpResponse(
            export.lines(conversions), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="{export.file_name()}"'
        return response

    @extend_schema(
        summary="Change a conversion's status",
        request=StatusChangeSerializer,
        responses={
            200: StatusChangeResultSerializer,
            **error_responses(
                400, 401, 403, 404, described={400: "invalid_status, or invalid (field errors)"}
            ),
        },
    )
    @action(detail=True, methods=["post"], permission_classes=[ConversionChangePermission])
    def status(self, request: Request, pk: str | None = None) -> Response:
        """Move the conversion to ``status``; rules that fire on a status change to it are
        planned and waiting deliveries that no longer match are cancelled. 200 with
        ``status_changed`` (``previous_status``, ``new_status``, ``change_id``) or
        ``unchanged`` when it already had that status. 400 ``invalid_status``."""
        conversion = self.get_object()
        form = StatusChangeSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return Response(status_change(conversion, form.validated_data, request.user))
