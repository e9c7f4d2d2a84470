"""REST API resources of this app (serializers and viewsets), registered under /api/v1/:
clicks, conversions (list, create through the /cv path, status changes) and the inbound
conversion log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

import django_filters
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import RawPostDataException, StreamingHttpResponse
from django.http.request import RequestDataTooBig
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, parsers, renderers, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import BaseRouter

from campaigns.models import status_from_text
from postbacks.masking import mask_secrets
from tracker import google_ads, ingest, permissions, services, tasks, uploads
from tracker.api.base import (
    LogCursorPagination,
    ModelPermissions,
    StrictSerializer,
    TimeCursorPagination,
)
from tracker.api.errors import BodyTooLarge, DomainError
from tracker.api.filters import UTCDateTimeFilter
from tracker.forms import PARAM_FIELDS
from tracker.models import (
    VAR_FIELDS,
    Click,
    Conversion,
    ConversionStatusChange,
    ConversionUpload,
    DeviceType,
    InboundRequest,
)
from tracker.views.common import client_ip

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


# --- Shared ----------------------------------------------------------------------------------


class TrackerErrorSerializer(serializers.Serializer):
    """The error body of every refusal."""

    error = serializers.CharField(help_text="A machine code, e.g. invalid_payout.")
    detail = serializers.JSONField(help_text="A text, or field errors for code invalid.")


def _errors(*codes: int, described: Mapping[int, str] | None = None) -> dict[int, OpenApiResponse]:
    described = described or {}
    return {
        code: OpenApiResponse(TrackerErrorSerializer, description=described.get(code, ""))
        for code in codes
    }


class ExactJSONParser(parsers.JSONParser):
    """JSON whose numbers stay text (exact decimals; never a float or a 10,000-digit int):
    the conversion form validates them as /cv does."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            raw = stream.read() if stream is not None else b""
            return json.loads(raw or b"{}", parse_float=str, parse_int=str, parse_constant=str)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class CreatedRangeFilterSet(django_filters.FilterSet):
    """``created_after`` (inclusive) and ``created_before`` (exclusive), ISO 8601."""

    created_after = UTCDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        label="Created at or after (ISO 8601, e.g. 2026-11-01T00:00:00Z).",
    )
    created_before = UTCDateTimeFilter(
        field_name="created_at",
        lookup_expr="lt",
        label="Created before (ISO 8601).",
    )


# --- Clicks ----------------------------------------------------------------------------------


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


# --- Conversions -----------------------------------------------------------------------------


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

    status = None
    created_after = None
    created_before = None
    is_test = None

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
            **_errors(
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
    list=extend_schema(responses={200: ConversionSerializer, **_errors(400, 401, 403)}),
    retrieve=extend_schema(responses={200: ConversionSerializer, **_errors(401, 403, 404)}),
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
            **_errors(
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


# --- Inbound log -----------------------------------------------------------------------------


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


def register(router: BaseRouter) -> None:
    """Add this app's viewsets to ``router``."""
    router.register("clicks", ClickViewSet, basename="click")
    router.register("conversions", ConversionViewSet, basename="conversion")
    router.register("inbound-requests", InboundRequestViewSet, basename="inboundrequest")
    router.register("conversion-uploads", ConversionUploadViewSet, basename="conversionupload")


# --- Conversion uploads ----------------------------------------------------------------------

# A JSON upload has at most this many rows; an upload processed while the client waits
# (``wait``) at most UPLOAD_WAIT_MAX_ROWS (more are queued, answered 202).
UPLOAD_JSON_MAX_ROWS = 10_000
UPLOAD_WAIT_MAX_ROWS = 1_000
# The keys a JSON row may have: the column names a CSV file's header may use (aliases
# included) -> the ingest parameter each names.
UPLOAD_JSON_KEYS: Mapping[str, str] = uploads.COLUMN_NAMES
# The columns of the CSV file written for JSON rows, in this order (those the rows use).
UPLOAD_COLUMNS = tuple(dict.fromkeys(UPLOAD_JSON_KEYS.values()))
# The same, for messages: each column with its aliases.
UPLOAD_KEYS_TEXT = (
    "; ".join(
        " / ".join(key for key, column in UPLOAD_JSON_KEYS.items() if column == name)
        for name in UPLOAD_COLUMNS
        if name not in PARAM_FIELDS
    )
    + f"; {PARAM_FIELDS[0]}..{PARAM_FIELDS[-1]}"
)


class ConversionUploadSerializer(serializers.ModelSerializer):
    uploaded_by = serializers.CharField(
        source="uploaded_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = ConversionUpload
        fields = (
            "id",
            "file_name",
            "state",
            "total_rows",
            "processed_rows",
            "accepted",
            "duplicates",
            "status_changes",
            "errors",
            "error",
            "uploaded_by",
            "created_at",
            "progress_at",
            "finished_at",
        )
        read_only_fields = fields


@extend_schema_field(
    {
        "type": "string",
        "enum": InboundRequest.Outcome.values,
        "description": "The row's result (as the inbound log's outcome).",
    }
)
class UploadOutcomeField(serializers.CharField):
    """The row's outcome, documented inline (the inbound log names the shared choice set)."""


class UploadRowSerializer(serializers.ModelSerializer):
    """One row's result (its inbound log entry)."""

    outcome = UploadOutcomeField(read_only=True)

    conversion = serializers.IntegerField(
        source="conversion_id", read_only=True, allow_null=True, help_text="Conversion ID."
    )

    class Meta:
        model = InboundRequest
        fields = ("row_number", "outcome", "error_code", "detail", "conversion", "click_id")
        read_only_fields = fields


class UploadFileSerializer(serializers.Serializer):
    """Multipart body of ``POST /conversion-uploads/``."""

    file = serializers.FileField(
        help_text="CSV, UTF-8: click_id,payout,transaction_id,conversion_type[,timestamp]; "
        "header row optional (then also status, rejection_reason, payout_currency, "
        "param1..param20)."
    )
    wait = serializers.BooleanField(
        required=False, default=False, help_text="Process now (up to 1,000 rows)."
    )


UPLOAD_ROW_HELP = {
    "click_id": "The click ID (UUID).",
    "payout": "Decimal (string or number); default: the offer's payout rules.",
    "txid": "Transaction ID.",
    "ct": "Conversion type, e.g. sale.",
    "timestamp": "Unix seconds or ISO 8601; default: the upload time.",
    "status": "approved (default), pending, rejected, refunded (any case; aliases such as "
    "chargeback). A repeat of a conversion with another status is a status change.",
    "rejection_reason": "A code, e.g. fraud (kept for rejected).",
    "payout_currency": "ISO 4217, e.g. EUR; default: the offer's currency.",
}


class UploadJSONRowSerializer(serializers.Serializer):
    """One row: the columns of a CSV file with a header, by the same names (aliases
    included; two names of one column in a row are refused, and so is any other key).
    Values are texts or numbers; null or missing is an empty cell."""

    # Documentation only: the rows are checked by rows_csv().

    def get_fields(self) -> dict[str, serializers.Field]:
        fields: dict[str, serializers.Field] = {}
        for key, column in UPLOAD_JSON_KEYS.items():
            text = UPLOAD_ROW_HELP.get(column, "<= 1000 chars.")
            if key != column:
                text = f"Same as {column}."
            fields[key] = serializers.CharField(
                required=False, allow_blank=True, allow_null=True, help_text=text
            )
        fields["click_id"].required = True
        return fields


class UploadRowsSerializer(serializers.Serializer):
    """JSON body of ``POST /conversion-uploads/``: the rows of a CSV file with a header, as
    objects keyed by the header's column names."""

    rows = UploadJSONRowSerializer(
        many=True,
        help_text=f"1 to {UPLOAD_JSON_MAX_ROWS:,} conversions; rows[i] is row i + 2 of the "
        "upload (row 1: the header the rows are written with).",
    )
    wait = serializers.BooleanField(
        required=False, default=False, help_text="Process now (up to 1,000 rows)."
    )


class UploadQueuedSerializer(ConversionUploadSerializer):
    results = serializers.URLField(read_only=True, help_text="The per-row results (GET).")

    class Meta(ConversionUploadSerializer.Meta):
        fields = (*ConversionUploadSerializer.Meta.fields, "results")
        read_only_fields = fields


class UploadDoneSerializer(UploadQueuedSerializer):
    rows = UploadRowSerializer(many=True, read_only=True, help_text="One result per row.")

    class Meta(UploadQueuedSerializer.Meta):
        fields = (*UploadQueuedSerializer.Meta.fields, "rows")
        read_only_fields = fields


def _cell(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise serializers.ValidationError({"rows": [f"{where} must be a string or a number."]})
    text = str(value)
    if "\r" in text or "\n" in text:
        raise serializers.ValidationError({"rows": [f"{where} contains a line break."]})
    return text


def _row_cells(index: int, row: Any) -> dict[str, str]:
    """JSON row ``index`` as ``{column: text}`` (the CSV header's column names). Raises
    ValidationError naming the row and the problem."""
    if not isinstance(row, Mapping):
        raise serializers.ValidationError({"rows": [f"rows[{index}] must be an object."]})
    unknown = sorted(str(key)[:64] for key in row if key not in UPLOAD_JSON_KEYS)
    if unknown:
        raise serializers.ValidationError(
            {
                "rows": [
                    f"rows[{index}]: unknown field(s) {', '.join(unknown[:20])}; known: "
                    f"{UPLOAD_KEYS_TEXT}."
                ]
            }
        )
    cells: dict[str, str] = {}
    named: dict[str, str] = {}
    for key, value in row.items():
        column = UPLOAD_JSON_KEYS[key]
        if column in named:
            raise serializers.ValidationError(
                {"rows": [f"rows[{index}]: {named[column]} and {key} are the same column."]}
            )
        named[column] = key
        cells[column] = _cell(value, f"rows[{index}].{key}")
    if not any(cell.strip() for cell in cells.values()):
        raise serializers.ValidationError({"rows": [f"rows[{index}] is empty."]})
    return cells


def rows_csv(rows: Any) -> bytes:
    """The JSON ``rows`` as the text of a CSV file with a header naming the columns the rows
    use (``click_id`` always), so that they are read as that file would be and ``rows[i]``
    is row ``i + 2`` of the upload (row 1 is the header). Each row's keys are the header's
    column names (:data:`UPLOAD_JSON_KEYS`); a missing key is an empty cell. Raises
    ValidationError (400 ``invalid``) naming the row and the problem: not a list of 1 to
    10,000 objects, an unknown key, two keys for one column, a value not a string, number
    or null, a line break in a value, an empty row."""
    if not isinstance(rows, list) or not rows:
        raise serializers.ValidationError({"rows": ["A non-empty list of objects is required."]})
    if len(rows) > UPLOAD_JSON_MAX_ROWS:
        raise serializers.ValidationError(
            {
                "rows": [
                    f"Too many rows: {len(rows):,}, at most {UPLOAD_JSON_MAX_ROWS:,}. "
                    "Split them into several uploads."
                ]
            }
        )
    table = [_row_cells(index, row) for index, row in enumerate(rows)]
    used = {"click_id"}.union(*table)
    columns = [column for column in UPLOAD_COLUMNS if column in used]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for cells in table:
        writer.writerow([cells.get(column, "") for column in columns])
    return out.getvalue().encode()


def _wait_flag(request: Request) -> bool:
    raw = request.query_params.get("wait")
    if raw is None and hasattr(request.data, "get"):
        raw = request.data.get("wait")
    if raw is None or raw == "":
        return False
    field = serializers.BooleanField()
    try:
        return field.to_internal_value(raw)
    except serializers.ValidationError:
        raise serializers.ValidationError({"wait": ["Must be true or false."]}) from None


class ConversionUploadPermission(ModelPermissions):
    """POST needs ``add_conversionupload`` and ``add_conversion``, as the admin upload."""

    perms_map = {
        **ModelPermissions.perms_map,
        "POST": ["%(app_label)s.add_%(model_name)s", "tracker.add_conversion"],
    }


@extend_schema_view(
    list=extend_schema(responses={200: ConversionUploadSerializer, **_errors(401, 403)}),
    retrieve=extend_schema(responses={200: ConversionUploadSerializer, **_errors(401, 403, 404)}),
)
class ConversionUploadViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """CSV uploads of conversions (as the admin's upload), newest first, page-number
    pagination. Counters: ``total_rows``, ``processed_rows`` and by result ``accepted``,
    ``duplicates``, ``status_changes``, ``errors``; ``state`` queued, running, done or
    failed (``error`` says why). The file's content is never returned.

    ``GET /conversion-uploads/{id}/rows/``: the per-row results, by row number.
    Needs ``tracker.view_conversionupload`` to read; ``tracker.add_conversionupload`` and
    ``tracker.add_conversion`` to upload, and ``tracker.change_conversion`` for a file with
    a row sending a status for a click that already has a conversion (else 403
    ``permission_denied`` naming the rows; nothing stored).
    """

    queryset = ConversionUpload.objects.defer("content").select_related("uploaded_by")
    serializer_class = ConversionUploadSerializer
    permission_classes = [ConversionUploadPermission]
    parser_classes = [ExactJSONParser, parsers.MultiPartParser]

    def get_queryset(self) -> Any:
        return super().get_queryset().order_by("-created_at", "-pk")

    def _results_url(self, upload: ConversionUpload) -> str:
        return self.request.build_absolute_uri(
            reverse("conversionupload-rows", kwargs={"pk": upload.pk})
        )

    @extend_schema(
        summary="Upload conversions (CSV file or JSON rows)",
        parameters=[
            OpenApiParameter(
                "wait",
                bool,
                description="true: process now and answer 201 with the results, when the "
                f"file has at most {UPLOAD_WAIT_MAX_ROWS:,} rows (else queued, 202). Also "
                "accepted in the body.",
            )
        ],
        request={
            "multipart/form-data": UploadFileSerializer,
            "application/json": UploadRowsSerializer,
        },
        responses={
            201: OpenApiResponse(
                UploadDoneSerializer, description="Processed (wait): counters and row results."
            ),
            202: OpenApiResponse(
                UploadQueuedSerializer, description="Queued: follow results for the rows."
            ),
            **_errors(
                400,
                401,
                403,
                described={
                    400: "invalid_file (the file is refused: too large, not UTF-8 CSV, bad "
                    "header, no rows; detail says why; nothing stored), invalid (no file, "
                    f"bad rows: rows[i] and the key or value named, more than "
                    f"{UPLOAD_JSON_MAX_ROWS:,} rows, bad wait)",
                },
            ),
        },
    )
    def create(self, request: Request) -> Response:
        """Upload conversions: a multipart ``file`` (the admin's CSV format:
        ``click_id,payout,transaction_id,conversion_type[,timestamp]``, header optional), or
        a JSON body ``{"rows": [{"click_id": ..., "payout": ..., ...}, ...]}`` (at most
        10,000), each row keyed by the column names a CSV header may use (``click_id``,
        ``payout``, ``txid``, ``ct``, ``timestamp``, ``status``, ``rejection_reason``,
        ``payout_currency``, ``param1``..``param20`` and their aliases such as
        ``transaction_id`` or ``currency``; any other key is a 400 naming the row). The rows
        are stored as the CSV file with a header they make, so each gives the result that
        file's line would: ``rows[i]`` is row ``i + 2``. Each row is registered as a /cv
        postback would be (channel upload). With ``wait`` true and at most 1,000 rows the
        upload is processed before answering (201 with the counters and ``rows``);
        otherwise it is queued (202) and ``results`` gives the rows as they are done."""
        wait = _wait_flag(request)
        if request.content_type.startswith("multipart/"):
            file = request.data.get("file")
            if not hasattr(file, "read"):
                raise serializers.ValidationError({"file": ["No file was submitted."]})
            name = file.name or "upload.csv"
            data = file.read(settings.TRACKER_UPLOAD_MAX_BYTES + 1)
        else:
            if not isinstance(request.data, Mapping):
                raise serializers.ValidationError(["The body must be a JSON object."])
            unknown = sorted(str(k)[:64] for k in set(request.data) - {"rows", "wait"})
            if unknown:
                raise serializers.ValidationError({k: ["Unknown field."] for k in unknown[:20]})
            name, data = "rows.json.csv", rows_csv(request.data.get("rows"))
        refusal = permissions.upload_refusal(request.user, data)
        if refusal:
            raise DomainError(403, permissions.PERMISSION_DENIED, refusal)
        try:
            upload = uploads.upload_create(name, data, user=request.user, enqueue=False)
        except uploads.UploadError as exc:
            raise DomainError(400, "invalid_file", str(exc)) from None
        if wait and upload.total_rows <= UPLOAD_WAIT_MAX_ROWS:
            upload = uploads.upload_process(upload)
            body = dict(ConversionUploadSerializer(upload).data)
            body["results"] = self._results_url(upload)
            rows = InboundRequest.objects.filter(upload=upload).order_by("row_number", "pk")
            body["rows"] = UploadRowSerializer(rows, many=True).data
            return Response(body, status=201)
        tasks.upload_enqueue(upload)
        body = dict(ConversionUploadSerializer(upload).data)
        body["results"] = self._results_url(upload)
        return Response(body, status=202)

    @extend_schema(
        summary="An upload's per-row results",
        responses={200: UploadRowSerializer(many=True), **_errors(401, 403, 404)},
    )
    @action(detail=True, methods=["get"])
    def rows(self, request: Request, pk: str | None = None) -> Response:
        """The rows done so far, by row number (the file's line; ``rows[i]`` of a JSON
        upload is row ``i + 2``), page-number pagination (``?page=``, ``?page_size=``)."""
        upload = self.get_object()
        rows = InboundRequest.objects.filter(upload=upload).order_by("row_number", "pk")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(UploadRowSerializer(page, many=True).data)
