"""The delivery log of the REST API (``/api/v1/deliveries/`` and ``/api/v1/attempts/``):
read-only, newest first (by time, then id) with cursor pagination, filtered like the admin
log; replay and cancel of deliveries, one or many."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from postbacks import services
from postbacks.api.common import HasPermissions, inline_enum
from postbacks.masking import MASK, mask_headers, mask_secrets
from postbacks.models import SLOW_MS, Attempt, Delivery, EventType
from postbacks.transports import KIND_CHOICES, Outcome
from tracker.api.base import TimeCursorPagination
from tracker.api.errors import DomainError
from tracker.api.filters import UTCDateTimeFilter

BULK_MAX = 1000
HTTP_CLASSES = ("2xx", "3xx", "4xx", "5xx", "none")


class DeliverySerializer(serializers.ModelSerializer):
    """A delivery; ``url``, ``body`` and ``last_error`` with secrets masked, ``headers``
    with secret header values masked (:func:`mask_headers`)."""

    status = inline_enum(serializers.ChoiceField(choices=Delivery.Status.choices))
    url = serializers.SerializerMethodField()
    body = serializers.SerializerMethodField()
    headers = serializers.SerializerMethodField(
        help_text="The request's headers as rendered; the value of Authorization, Cookie "
        "and any header named like a secret (auth, token, secret, key, signature, "
        f"password) is {MASK}."
    )
    last_error = serializers.SerializerMethodField()
    external_id = serializers.SerializerMethodField(help_text="The click's external ID.")
    txid = serializers.SerializerMethodField(help_text="The conversion's transaction ID.")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "public_id",
            "created_at",
            "updated_at",
            "status",
            "rule",
            "event_type",
            "event_detail",
            "is_test",
            "traffic_source",
            "click",
            "conversion",
            "impression",
            "external_id",
            "txid",
            "kind",
            "method",
            "url",
            "host",
            "headers",
            "body",
            "due_at",
            "attempt_count",
            "max_attempts",
            "last_status_code",
            "last_error",
            "delivered_at",
        ]
        read_only_fields = fields

    def get_url(self, obj: Delivery) -> str:
        return mask_secrets(obj.url)

    def get_body(self, obj: Delivery) -> str:
        return mask_secrets(obj.body)

    @extend_schema_field(serializers.DictField(child=serializers.CharField(allow_blank=True)))
    def get_headers(self, obj: Delivery) -> dict[str, str]:
        return mask_headers(obj.headers if isinstance(obj.headers, dict) else {})

    def get_last_error(self, obj: Delivery) -> str:
        return mask_secrets(obj.last_error)

    def get_external_id(self, obj: Delivery) -> str:
        return obj.click.external_id if obj.click else ""

    def get_txid(self, obj: Delivery) -> str:
        return obj.conversion.txid if obj.conversion else ""


class AttemptSerializer(serializers.ModelSerializer):
    """One HTTP request of a delivery (``url`` as logged: secrets masked)."""

    rule = serializers.IntegerField(source="delivery.rule_id", read_only=True, allow_null=True)
    traffic_source = serializers.IntegerField(
        source="delivery.traffic_source_id", read_only=True, allow_null=True
    )
    click = serializers.UUIDField(source="delivery.click_id", read_only=True, allow_null=True)
    external_id = serializers.SerializerMethodField(help_text="The click's external ID.")
    txid = serializers.SerializerMethodField(help_text="The conversion's transaction ID.")
    error = serializers.SerializerMethodField()

    class Meta:
        model = Attempt
        fields = [
            "id",
            "delivery",
            "number",
            "started_at",
            "outcome",
            "status_code",
            "duration_ms",
            "method",
            "url",
            "response_body",
            "error",
            "rule",
            "traffic_source",
            "click",
            "external_id",
            "txid",
        ]
        read_only_fields = fields

    def get_external_id(self, obj: Attempt) -> str:
        return obj.delivery.click.external_id if obj.delivery.click else ""

    def get_txid(self, obj: Attempt) -> str:
        return obj.delivery.conversion.txid if obj.delivery.conversion else ""

    def get_error(self, obj: Attempt) -> str:
        return mask_secrets(obj.error)


def filter_http_class(field: str) -> Any:
    def method(queryset: QuerySet, name: str, value: str) -> QuerySet:
        if value == "none":
            return queryset.filter(**{f"{field}__isnull": True})
        low = int(value[0]) * 100
        return queryset.filter(**{f"{field}__gte": low, f"{field}__lt": low + 100})

    return method


class LogFilter(django_filters.FilterSet):
    """Filters shared by the delivery and attempt lists; ``prefix`` leads from the listed
    model to the delivery."""

    prefix = ""
    date_field = "created_at"

    created_after = UTCDateTimeFilter(
        method="filter_created_after", label="Created at or after (ISO 8601 date-time)."
    )
    created_before = UTCDateTimeFilter(
        method="filter_created_before", label="Created before (ISO 8601 date-time)."
    )
    rule = django_filters.NumberFilter(method="filter_delivery", label="Rule id.")
    traffic_source = django_filters.NumberFilter(
        method="filter_delivery", label="Traffic source id."
    )
    offer = django_filters.NumberFilter(method="filter_delivery", label="The click's offer id.")
    campaign = django_filters.NumberFilter(
        method="filter_delivery", label="The click's campaign id."
    )
    event_type = django_filters.ChoiceFilter(
        choices=EventType.choices, method="filter_delivery", label="Event type."
    )
    click_id = django_filters.UUIDFilter(method="filter_delivery", label="Click ID (UUID).")
    external_id = django_filters.CharFilter(
        method="filter_delivery", label="The click's external ID (exact)."
    )
    txid = django_filters.CharFilter(
        method="filter_delivery", label="The conversion's transaction ID (exact)."
    )

    LOOKUPS = {
        "rule": "rule_id",
        "traffic_source": "traffic_source_id",
        "offer": "click__offer_id",
        "campaign": "click__campaign_id",
        "event_type": "event_type",
        "click_id": "click_id",
        "external_id": "click__external_id",
        "txid": "conversion__txid",
    }

    def filter_created_after(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return queryset.filter(**{f"{self.date_field}__gte": value})

    def filter_created_before(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return queryset.filter(**{f"{self.date_field}__lt": value})

    def filter_delivery(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return queryset.filter(**{self.prefix + self.LOOKUPS[name]: value})


class StartedCursorPagination(TimeCursorPagination):
    time_field = "started_at"  # attempt_started_idx


class DeliveryFilter(LogFilter):
    # distinct=False: a filter on the listed table's own column never repeats a row, and
    # DISTINCT over every joined column cost seconds at 2 million rows (bench/api.py).
    status = django_filters.MultipleChoiceFilter(
        choices=Delivery.Status.choices, label="Status (repeat for several).", distinct=False
    )
    kind = django_filters.ChoiceFilter(choices=KIND_CHOICES, label="Destination kind.")
    http = django_filters.ChoiceFilter(
        choices=[(c, c) for c in HTTP_CLASSES],
        method=filter_http_class("last_status_code"),
        label="Last HTTP status class: 2xx, 3xx, 4xx, 5xx or none (no answer).",
    )
    last_status_code = django_filters.NumberFilter(label="Last HTTP status, exact.")
    is_test = django_filters.BooleanFilter(label="Test deliveries only (true) or none (false).")

    class Meta:
        model = Delivery
        fields: list[str] = []


class AttemptFilter(LogFilter):
    prefix = "delivery__"
    date_field = "started_at"

    created_after = UTCDateTimeFilter(
        method="filter_created_after", label="Started at or after (ISO 8601 date-time)."
    )
    created_before = UTCDateTimeFilter(
        method="filter_created_before", label="Started before (ISO 8601 date-time)."
    )
    delivery = django_filters.NumberFilter(label="Delivery id.")
    outcome = django_filters.MultipleChoiceFilter(
        choices=Outcome.choices, label="Outcome (repeat for several).", distinct=False
    )
    status_code = django_filters.NumberFilter(label="HTTP status, exact.")
    http = django_filters.ChoiceFilter(
        choices=[(c, c) for c in HTTP_CLASSES],
        method=filter_http_class("status_code"),
        label="HTTP status class: 2xx, 3xx, 4xx, 5xx or none (no answer).",
    )
    slow = django_filters.BooleanFilter(
        method="filter_slow", label="Slower than 1 s (true) or not (false)."
    )

    class Meta:
        model = Attempt
        fields: list[str] = []

    def filter_slow(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return queryset
        if value:
            return queryset.filter(duration_ms__gt=SLOW_MS)
        return queryset.filter(duration_ms__lte=SLOW_MS)


class ChangeDeliveryPermission(HasPermissions):
    """Replay and cancel of many: ``postbacks.change_delivery`` (the answer is ids)."""

    perms = ("postbacks.change_delivery",)


class ChangeAndViewDeliveryPermission(HasPermissions):
    """Replay and cancel of one: ``postbacks.change_delivery``, and ``view_delivery`` since
    the answer is the delivery."""

    perms = ("postbacks.change_delivery", "postbacks.view_delivery")


class DeliveryIdsSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        min_length=1,
        max_length=BULK_MAX,
        help_text=f"Delivery ids, at most {BULK_MAX}.",
    )


class DeliveryBulkResultSerializer(serializers.Serializer):
    requested = serializers.IntegerField(help_text="Distinct ids sent.")
    done = serializers.IntegerField(help_text="Scheduled (replay) or cancelled.")
    skipped = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Ids not found or not in a state the operation applies to.",
    )


def bulk_schema(operation_id: str) -> Any:
    return extend_schema(
        operation_id=operation_id,
        request=DeliveryIdsSerializer,
        responses={
            200: DeliveryBulkResultSerializer,
            400: OpenApiTypes.OBJECT,
            403: OpenApiTypes.OBJECT,
        },
    )


OPERATION_ERRORS = {
    403: OpenApiTypes.OBJECT,
    404: OpenApiTypes.OBJECT,
    409: OpenApiTypes.OBJECT,
}


class DeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """Deliveries (one planned firing of a rule for an event), newest first (created_at, then id).

    Cursor pagination: follow ``next`` (stable while rows are added; ``?page_size=``, at
    most 500). Filters: ``created_after`` / ``created_before`` (ISO 8601 date-times, on
    ``created_at``), ``rule``, ``traffic_source``, ``offer``, ``campaign`` (ids; offer and
    campaign through the click), ``status`` (repeatable), ``event_type``, ``kind``,
    ``http`` (2xx..5xx or none, on the last HTTP status), ``last_status_code``,
    ``is_test``, ``click_id``, ``external_id``, ``txid`` (exact). Secrets in URLs, bodies
    and errors are masked, and so are the values of secret headers (Authorization,
    Cookie, names with auth, token, secret, key, signature, password).

    Operations (need ``postbacks.change_delivery``; those answering the delivery,
    ``replay`` and ``cancel`` of one, ``view_delivery`` too): ``POST {id}/replay/`` schedules a
    failed, cancelled or waiting delivery for an attempt now, ``POST {id}/cancel/``
    cancels a waiting one (409 ``not_replayable`` / ``not_cancellable`` otherwise);
    ``POST replay/`` and ``POST cancel/`` take ``{"ids": [...]}`` (at most 1000)."""

    queryset = Delivery.objects.select_related("click", "conversion")
    serializer_class = DeliverySerializer
    pagination_class = TimeCursorPagination  # created_at, id (delivery_created_idx)
    filterset_class = DeliveryFilter

    def get_permissions(self) -> Sequence[Any]:
        if self.action in ("replay", "cancel"):
            return [ChangeAndViewDeliveryPermission()]
        if self.action in ("replay_many", "cancel_many"):
            return [ChangeDeliveryPermission()]
        return super().get_permissions()

    @extend_schema(request=None, responses={200: DeliverySerializer, **OPERATION_ERRORS})
    @action(detail=True, methods=["post"])
    def replay(self, request: Request, pk: str | None = None) -> Response:
        """Schedule this delivery (failed, cancelled or waiting) for an attempt now."""
        return self._act_on_one(services.deliveries_retry_now, "not_replayable")

    @extend_schema(request=None, responses={200: DeliverySerializer, **OPERATION_ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel this delivery if it is still waiting (scheduled)."""
        return self._act_on_one(
            partial(services.deliveries_cancel, by=self._by(request)), "not_cancellable"
        )

    def _act_on_one(self, service: Callable[[list[Delivery]], int], refusal: str) -> Response:
        """Run ``service`` on this delivery; 409 ``refusal`` when it acted on none."""
        delivery = self.get_object()
        if not service([delivery]):
            raise DomainError(409, refusal, f"Delivery {delivery.pk} is {delivery.status}.")
        return Response(self.get_serializer(self.get_object()).data)

    @bulk_schema("deliveries_replay_many")
    @action(detail=False, methods=["post"], url_path="replay", url_name="replay-many")
    def replay_many(self, request: Request) -> Response:
        """Schedule these deliveries for an attempt now; the others are skipped."""
        ids = self._ids(request)
        rows = list(
            Delivery.objects.filter(pk__in=ids).only("status", "max_attempts", "attempt_count")
        )
        # One call (one dispatcher wake-up); the rows it acts on are those it accepts.
        done = {row.pk for row in rows if row.status in services.REPLAYABLE_STATUSES}
        if services.deliveries_retry_now(rows) != len(done):  # a row changed meanwhile
            done = set(
                Delivery.objects.filter(pk__in=done, status=Delivery.Status.SCHEDULED).values_list(
                    "pk", flat=True
                )
            )
        return self._bulk_answer(ids, done)

    @bulk_schema("deliveries_cancel_many")
    @action(detail=False, methods=["post"], url_path="cancel", url_name="cancel-many")
    def cancel_many(self, request: Request) -> Response:
        """Cancel those of these deliveries still waiting; the others are skipped."""
        ids = self._ids(request)
        waiting = set(Delivery.objects.filter(pk__in=ids).waiting().values_list("pk", flat=True))
        services.deliveries_cancel((Delivery(pk=pk) for pk in waiting), by=self._by(request))
        done = set(
            Delivery.objects.filter(pk__in=waiting, status=Delivery.Status.CANCELLED).values_list(
                "pk", flat=True
            )
        )
        return self._bulk_answer(ids, done)

    @staticmethod
    def _by(request: Request) -> str:
        """Who acts, as a cancelled delivery records it."""
        return f"{request.user.get_username()} (API)"

    @staticmethod
    def _ids(request: Request) -> list[int]:
        serializer = DeliveryIdsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return list(dict.fromkeys(serializer.validated_data["ids"]))

    @staticmethod
    def _bulk_answer(ids: list[int], done: set[int]) -> Response:
        skipped = [pk for pk in ids if pk not in done]
        return Response(
            {"requested": len(ids), "done": len(done), "skipped": skipped},
            status=status.HTTP_200_OK,
        )


class AttemptViewSet(viewsets.ReadOnlyModelViewSet):
    """The postback log: one row per HTTP request sent, newest first (started_at, then id).

    Cursor pagination: follow ``next`` (stable while rows are added; ``?page_size=``, at
    most 500). ``duration_ms`` is milliseconds; ``status_code`` null means no answer
    (timeout, connection error). Filters: ``created_after`` / ``created_before`` (ISO 8601
    date-times, on ``started_at``), ``delivery``, ``rule``, ``traffic_source``, ``offer``,
    ``campaign`` (ids), ``outcome`` (repeatable), ``status_code`` (exact), ``http``
    (2xx..5xx or none), ``slow`` (slower than 1 s), ``event_type``, ``click_id``,
    ``external_id``, ``txid`` (exact). URLs are stored with secrets masked."""

    queryset = Attempt.objects.select_related("delivery__click", "delivery__conversion")
    serializer_class = AttemptSerializer
    pagination_class = StartedCursorPagination
    filterset_class = AttemptFilter
