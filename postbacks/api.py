"""REST API resources of this app (serializers and viewsets), registered under /api/v1/.

- ``postback-rules``: CRUD of rules, validated by the admin's rule form (same checks,
  same messages) on top of the model's ``full_clean``; ``{id}/preview/`` and ``{id}/test/``
  are the rule form's preview and test button (``postbacks.preview``), for a conversion,
  a click or samples. Secrets in the templates (header values, URL parameter values such as
  ``token=``) are write-only (:mod:`postbacks.masking`).
- ``deliveries`` and ``attempts``: the delivery log, read-only, newest first (by time, then id) with
  cursor pagination, filtered like the admin log; replay and cancel of deliveries.
- ``macros``: the macro catalogue.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.routers import BaseRouter

from postbacks import macros, preview, services
from postbacks.masking import (
    MASK,
    MaskedValueMissing,
    mask_header_lines,
    mask_headers,
    mask_secrets,
    unmask_header_lines,
    unmask_secrets,
)
from postbacks.models import SLOW_MS, Attempt, Delivery, EventType, PostbackRule
from postbacks.rules import (
    PostbackRuleForm,
    describe_conversion,
    form_messages,
    preview_answer,
)
from postbacks.transports import (
    KIND_CHOICES,
    Outcome,
    get_transport,
    kind_help,
)
from tracker import currency
from tracker.api.base import StrictModelSerializer, StrictSerializer, TimeCursorPagination
from tracker.api.errors import DomainError
from tracker.api.filters import UTCDateTimeFilter
from tracker.models import Click, Conversion

SCOPE_FIELDS = ("campaigns", "offers", "traffic_sources", "affiliate_networks", "rejection_reasons")
BULK_MAX = 1000
HTTP_CLASSES = ("2xx", "3xx", "4xx", "5xx", "none")


def inline_enum(field: serializers.Field) -> serializers.Field:
    """``field`` (a choice field) documented with its values inline: no shared enum
    component, whose name would collide with other apps' ``status`` enums."""
    values = list(field.choices)
    return extend_schema_field({"type": "string", "enum": values})(field)


# --- Rules -------------------------------------------------------------------------------


class CurrencyCodeField(serializers.CharField):
    """A currency code, stripped and upper-cased before it is checked (as in admin)."""

    def to_internal_value(self, data: Any) -> str:
        return super().to_internal_value(data).strip().upper()


class SigningStateSerializer(serializers.Serializer):
    signed = serializers.BooleanField()
    secret_hint = serializers.CharField(help_text="The secret's last 4 characters, e.g. …x1Yz.")
    previous_valid_until = serializers.DateTimeField(
        allow_null=True, help_text="Until when the previous secret also signs; null: it does not."
    )


class SigningSecretRequestSerializer(StrictSerializer):
    grace_hours = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=168,
        help_text="Hours the previous secret keeps signing too (0..168); default "
        "POSTBACKS_SIGNING_GRACE_HOURS (24). 0 drops it at once.",
    )


class SigningSecretSerializer(serializers.Serializer):
    signing_secret = serializers.CharField(
        help_text="whsec_ + base64 of 32 random bytes: shown this once; give it to the "
        "receiver, which verifies webhook-signature with it."
    )
    previous_secret_expires_at = serializers.DateTimeField(allow_null=True)


class PostbackRuleSerializer(StrictModelSerializer):
    """A rule; every field the admin form edits, scope lists as ids. Secrets are
    write-only: secret header values in ``headers_template`` and the values of secret
    parameters or keys in ``url_template`` and ``body_template`` (``token=``, ``api_key=``,
    ``sig=``, ``password=``...; :mod:`postbacks.masking`) are answered ``***``; a ``***``
    sent back keeps the saved value."""

    payout_currency = CurrencyCodeField(
        max_length=3,
        allow_blank=True,
        required=False,
        help_text=PostbackRule._meta.get_field("payout_currency").help_text,
    )

    statuses = serializers.ListField(
        child=inline_enum(serializers.ChoiceField(choices=Conversion.Status.choices)),
        required=False,
        help_text="Conversion statuses that fire this rule; empty: any status.",
    )
    conversion_types = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text='Conversion types (ct), e.g. ["lead", "sale"], any case; empty: any type.',
    )
    warnings = serializers.SerializerMethodField(
        help_text="Non-blocking advice from validation (create/update answers only), e.g. "
        "a missing {externalid}."
    )
    clear_access_token = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="true: remove the saved access token (an empty access_token keeps it).",
    )
    has_access_token = serializers.SerializerMethodField(
        help_text="Whether an access token is saved (it is never answered)."
    )
    signing = serializers.SerializerMethodField(
        help_text="Standard Webhooks signing: whether requests are signed, the last "
        "characters of the secret, and until when the previous secret also signs. Secrets are "
        "set with POST signing-secret/ (answered once) and removed with DELETE signing-secret/."
    )

    class Meta:
        model = PostbackRule
        fields = [
            "id",
            *PostbackRuleForm._meta.fields,
            "preset",
            "consecutive_failures",
            "disabled_reason",
            "disabled_at",
            "needs_attention",
            "created_at",
            "updated_at",
            "warnings",
            "clear_access_token",
            "has_access_token",
            "signing",
        ]
        read_only_fields = [
            "preset",
            "consecutive_failures",
            "disabled_reason",
            "disabled_at",
            "needs_attention",
            "created_at",
            "updated_at",
        ]
        # Secrets of a destination kind, when the form edits them: written, never answered.
        extra_kwargs = {
            **{name: {"write_only": True} for name in ("access_token", "signing_secret")},
            "kind": {"help_text": kind_help()},
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.validation_warnings: list[str] = []

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_warnings(self, obj: PostbackRule) -> list[str]:
        return self.validation_warnings

    def get_has_access_token(self, obj: PostbackRule) -> bool:
        return bool(obj.access_token)

    @extend_schema_field(SigningStateSerializer)
    def get_signing(self, obj: PostbackRule) -> dict[str, Any]:
        until = obj.previous_secret_expires_at
        if not (obj.previous_signing_secret and until and until > timezone.now()):
            until = None
        return {
            "signed": bool(obj.signing_secret),
            "secret_hint": f"…{obj.signing_secret[-4:]}" if obj.signing_secret else "",
            "previous_valid_until": until,
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The token is never answered: an empty one keeps the saved token, like the admin.
        self._clear_token = attrs.pop("clear_access_token", False)
        if self._clear_token:
            attrs["access_token"] = ""
        elif "access_token" in attrs and not attrs["access_token"]:
            attrs["access_token"] = self.instance.access_token if self.instance else ""
        return super().validate(attrs)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["headers_template"].help_text = (
            "Extra request headers, one Name: value per line (macros allowed in values). "
            "Write-only secrets: the value of Authorization, Proxy-Authorization, Cookie and "
            "any header whose name contains auth, token, secret, key, signature or password "
            f"is answered {MASK}; a line Name: {MASK} sent back keeps the saved "
            "value (400 when the rule has no such header)."
        )
        for name in ("url_template", "body_template"):
            fields[name].help_text = (
                f"{fields[name].help_text} Write-only secrets: the value of a parameter or "
                "JSON key named like a secret (token, key, secret, sig, password, pw, auth...) "
                f"is answered {MASK}; {MASK} sent back keeps the saved value."
            ).strip()
        return fields

    def to_representation(self, instance: PostbackRule) -> dict[str, Any]:
        data = super().to_representation(instance)
        if data.get("headers_template"):
            data["headers_template"] = mask_header_lines(data["headers_template"])
        for name in ("url_template", "body_template"):
            if data.get(name):
                data[name] = mask_secrets(data[name])
        return data

    def _stored(self, name: str) -> str:
        return getattr(self.instance, name, "") if self.instance is not None else ""

    def validate_headers_template(self, value: str) -> str:
        try:
            return unmask_header_lines(value, self._stored("headers_template"))
        except MaskedValueMissing as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_url_template(self, value: str) -> str:
        try:
            return unmask_secrets(value, self._stored("url_template"))
        except MaskedValueMissing as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_body_template(self, value: str) -> str:
        try:
            return unmask_secrets(value, self._stored("body_template"))
        except MaskedValueMissing as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_conversion_types(self, value: list[str]) -> list[str]:
        if any("," in item for item in value):
            raise serializers.ValidationError("A conversion type cannot contain a comma.")
        return value

    def clean_instance(self, instance: PostbackRule, attrs: dict[str, Any]) -> None:
        """Run the admin's rule form on the values as they would be saved: its field
        checks and the transport's (unknown macros, ``{var:...}`` of the chosen sources)."""
        data = self._form_data(attrs)
        if getattr(self, "_clear_token", False):
            data["clear_access_token"] = "on"
        form = PostbackRuleForm(data, instance=self._copy())
        if not form.is_valid():
            raise serializers.ValidationError(
                {
                    (field if field in self.fields else "non_field_errors"): list(errors)
                    for field, errors in form.errors.items()
                }
            )
        attrs["conversion_types"] = form.cleaned_data["conversion_types"]
        attrs["payout_currency"] = form.cleaned_data["payout_currency"]
        warnings = list(form.validation_warnings)
        code = attrs["payout_currency"]
        if code and currency.missing_rates(code):
            warnings.append(
                f"No {code} exchange rate yet: {{payout}} is sent unconverted, in the "
                "conversion's currency, until one is added."
            )
        self.validation_warnings = list(dict.fromkeys(warnings))

    def _copy(self) -> PostbackRule:
        """An unsaved copy of the rule being edited (the form writes on its instance)."""
        rule = PostbackRule()
        if self.instance is not None:
            rule._state.adding = False
            for field in PostbackRule._meta.concrete_fields:
                setattr(rule, field.attname, getattr(self.instance, field.attname))
        return rule

    def _form_data(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The admin form's data: ``attrs`` over the saved rule (or the model defaults)."""
        base = self.instance if self.instance is not None else PostbackRule()
        data: dict[str, Any] = {}
        for name in PostbackRuleForm._meta.fields:
            if name in SCOPE_FIELDS:
                if name in attrs:
                    value = [obj.pk for obj in attrs[name]]
                elif base.pk:
                    value = list(getattr(base, name).values_list("pk", flat=True))
                else:
                    value = []
            else:
                value = attrs[name] if name in attrs else getattr(base, name)
            if name == "conversion_types":
                value = ", ".join(value or [])
            data[name] = "" if value is None else value
        return data


class PostbackRuleFilter(django_filters.FilterSet):
    class Meta:
        model = PostbackRule
        fields = ["event_type", "kind", "is_active"]


class PostbackRuleViewSet(viewsets.ModelViewSet):
    """Postback rules: what to fire (event type, scope, firing conditions), where (the
    destination templates with macros, see ``/macros/``) and how (retries, timeout).

    Validated like the admin rule form: an unknown macro in ``url_template``,
    ``body_template`` or ``headers_template`` is a 400 whose detail names it under that
    field, e.g. ``{"error": "invalid", "detail": {"url_template": ["Unknown macro
    {clickid} ..."]}}``; unknown fields are refused (400). Scope lists (``campaigns``,
    ``offers``, ``traffic_sources``, ``affiliate_networks``, ``rejection_reasons``) are id
    lists, empty = all. ``delay_seconds``, ``retry_base_seconds`` and ``timeout_seconds``
    are seconds. Create and update answers carry non-blocking ``warnings``. Deactivating
    (``is_active: false``) or deleting a rule cancels its scheduled deliveries.

    Filters: ``event_type``, ``kind``, ``is_active``. Page-number pagination."""

    queryset = PostbackRule.objects.prefetch_related(*SCOPE_FIELDS).order_by("name", "pk")
    serializer_class = PostbackRuleSerializer
    filterset_class = PostbackRuleFilter

    def perform_update(self, serializer: PostbackRuleSerializer) -> None:
        rule: PostbackRule = serializer.instance
        was_active = rule.is_active
        active = serializer.validated_data.get("is_active", was_active)
        if active and not was_active:
            # Switched back on by hand: the failure streak and the banner start afresh.
            serializer.save(needs_attention=False, consecutive_failures=0)
        else:
            serializer.save()
        if was_active and not active:
            services.rules_deactivate([rule.pk], self._reason("deactivated"))

    def perform_destroy(self, instance: PostbackRule) -> None:
        with transaction.atomic():
            services.rules_deactivate([instance.pk], self._reason("deleted"))
            instance.delete()

    def _reason(self, what: str) -> str:
        return f"Rule {what} through the API by {self.request.user.get_username()}."

    # Preview and test: the admin rule form's (``postbacks.preview``), on the saved rule.
    # Documented by ``extend_schema_view`` below, once the delivery serializers exist.

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.action == "test":
            return [ChangeRulePermission()]
        if self.action == "signing_secret":
            return [SigningSecretPermission()]
        return super().get_permissions()

    @extend_schema(
        methods=["POST"],
        summary="Generate (or rotate) the rule's signing secret",
        request=SigningSecretRequestSerializer,
        responses={200: SigningSecretSerializer},
    )
    @extend_schema(methods=["DELETE"], summary="Stop signing", request=None, responses={204: None})
    @action(detail=True, methods=["post", "delete"], url_path="signing-secret")
    def signing_secret(self, request: Request, pk: str | None = None) -> Response:
        """POST: a new Standard Webhooks secret (``whsec_...``), answered this once; the
        previous one keeps signing for ``grace_hours`` (default
        ``POSTBACKS_SIGNING_GRACE_HOURS``). DELETE: requests go unsigned."""
        rule = self.get_object()
        if request.method == "DELETE":
            services.stop_signing(rule)
            return Response(status=status.HTTP_204_NO_CONTENT)
        body = SigningSecretRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        secret = services.rotate_signing_secret(rule, body.validated_data.get("grace_hours"))
        answer = {
            "signing_secret": secret,
            "previous_secret_expires_at": rule.previous_secret_expires_at,
        }
        return Response(answer, headers={"Cache-Control": "no-store"})

    @action(detail=True, methods=["get"])
    def preview(self, request: Request, pk: str | None = None) -> Response:
        """The request this rule would send, as the admin form's preview shows it."""
        rule = self.get_object()
        conversion, click = RuleActionSerializer.event(request.query_params)
        # The admin form on the saved values: its warnings and its custom variables.
        data = PostbackRuleSerializer(instance=rule)._form_data({})
        form = PostbackRuleForm(data, instance=PostbackRuleSerializer(instance=rule)._copy())
        form.is_valid()
        # Rendered from the templates as the API shows them: their secrets stay ***.
        shown = PostbackRuleSerializer(instance=rule)._copy()
        shown.url_template = mask_secrets(rule.url_template)
        shown.body_template = mask_secrets(rule.body_template)
        shown.headers_template = mask_header_lines(rule.headers_template)
        rendered = preview.render_preview(
            shown, conversion, click=click, known_vars=form.known_vars()
        )
        rendered["headers"] = mask_headers(rendered["headers"])
        context = preview.sample_context(rule, conversion, click=click, notes=[])
        used = [
            name
            for template in (
                rule.url_template,
                rule.headers_template,
                rule.body_template,
                rule.field_mapping,
            )
            for name in macros.find_macros(template or "")
        ]
        values = {name: context.get(name, "") for name in dict.fromkeys(used)}
        answer = preview_answer(
            errors=form_messages(form) + list(rendered["errors"]),
            warnings=form.validation_warnings + list(rendered["warnings"]),
            conversion=preview.describe_click(click, rule)
            if click is not None
            else describe_conversion(conversion),
            request={key: rendered[key] for key in ("method", "url", "headers", "body")},
            macros=values,
            empty_macros=[name for name, value in values.items() if not value],
        )
        return Response(answer)

    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Send a test postback now, as the admin form's test button does."""
        rule = self.get_object()
        conversion, click = RuleActionSerializer.event(request.data)
        try:
            get_transport(rule.kind)
        except KeyError:
            raise DomainError(
                400, "untestable_kind", f"Rule {rule.pk} has kind {rule.kind!r}, not sendable."
            ) from None
        try:
            delivery, _attempt = preview.send_test(rule, conversion, user=request.user, click=click)
        except ValidationError as exc:
            raise DomainError(
                400, "invalid_rule", ["Nothing was sent.", *preview.field_messages(exc)]
            ) from None
        delivery = Delivery.objects.select_related("click", "conversion").get(pk=delivery.pk)
        attempts = Attempt.objects.filter(delivery=delivery).select_related(
            "delivery__click", "delivery__conversion"
        )
        context = self.get_serializer_context()
        attempts_url = reverse("attempt-list", request=request) + f"?delivery={delivery.pk}"
        return Response(
            {
                "conversion": describe_conversion(conversion)
                if conversion is not None
                else preview.describe_click(click, rule)
                if click is not None
                else "The most recent click in the rule's scope (else any click, else "
                "samples) with sample conversion values.",
                "delivery": DeliverySerializer(delivery, context=context).data,
                "attempts": AttemptSerializer(attempts, many=True, context=context).data,
                "attempts_url": attempts_url,
            }
        )


class HasPermissions(permissions.BasePermission):
    """All of ``perms`` (``app_label.codename``), for an action a model permission does not
    cover; subclasses name them."""

    perms: tuple[str, ...] = ()

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perms(self.perms))


class ChangeRulePermission(HasPermissions):
    """Sending a test postback: ``postbacks.change_postbackrule``; the answer is the test
    delivery and its attempt, so ``postbacks.view_delivery`` and ``view_attempt`` too."""

    perms = ("postbacks.change_postbackrule", "postbacks.view_delivery", "postbacks.view_attempt")


class SigningSecretPermission(HasPermissions):
    """Setting or removing the signing secret: ``postbacks.change_postbackrule``."""

    perms = ("postbacks.change_postbackrule",)


class RuleActionSerializer(serializers.Serializer):
    """The event a preview or test is rendered for: a conversion, a click, or neither
    (sample values)."""

    conversion = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="A conversion id: its real values fill the macros. Omitted: sample values "
        "(a test uses the most recent click in the rule's scope with sample conversion "
        "values).",
    )
    click = serializers.UUIDField(
        required=False,
        help_text="A click ID (UUID), for click and impression rules: that click's real "
        "values fill the macros (a conversion rule gets sample conversion values). Not "
        "with conversion.",
    )

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(getattr(data, "keys", lambda: [])()) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("conversion") is not None and attrs.get("click") is not None:
            message = "Give conversion or click, not both."
            raise serializers.ValidationError({"conversion": [message], "click": [message]})
        return attrs

    @classmethod
    def event(cls, data: Any) -> tuple[Conversion | None, Click | None]:
        """``(conversion, click)`` named by ``data`` (query parameters or a body), at most
        one of them. Raises serializers.ValidationError (400 ``invalid``: unknown field,
        malformed id or UUID, both given) or DomainError (404 ``unknown_conversion`` /
        ``unknown_click``)."""
        serializer = cls(data=data)
        serializer.is_valid(raise_exception=True)
        values = serializer.validated_data
        return conversion_or_404(values.get("conversion")), click_or_404(values.get("click"))


def conversion_or_404(pk: int | None) -> Conversion | None:
    """The conversion ``pk``, or None for None; DomainError 404 ``unknown_conversion``."""
    if pk is None:
        return None
    conversion = Conversion.objects.filter(pk=pk).first()
    if conversion is None:
        raise DomainError(404, "unknown_conversion", f"No conversion with id {pk}.")
    return conversion


def click_or_404(pk: uuid.UUID | None) -> Click | None:
    """The click ``pk`` (a click ID), or None for None; DomainError 404 ``unknown_click``."""
    if pk is None:
        return None
    click = Click.objects.filter(pk=pk).select_related("campaign").first()
    if click is None:
        raise DomainError(404, "unknown_click", f"No click with ID {pk}.")
    return click


# --- Delivery log ------------------------------------------------------------------------


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
        return obj.click.external_id if obj.click_id else ""

    def get_txid(self, obj: Delivery) -> str:
        return obj.conversion.txid if obj.conversion_id else ""


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
        return obj.delivery.click.external_id if obj.delivery.click_id else ""

    def get_txid(self, obj: Attempt) -> str:
        return obj.delivery.conversion.txid if obj.delivery.conversion_id else ""

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

    def get_permissions(self) -> list[permissions.BasePermission]:
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
        return self._act_on_one(services.deliveries_cancel, "not_cancellable")

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
        services.deliveries_cancel(Delivery(pk=pk) for pk in waiting)
        done = set(
            Delivery.objects.filter(pk__in=waiting, status=Delivery.Status.CANCELLED).values_list(
                "pk", flat=True
            )
        )
        return self._bulk_answer(ids, done)

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


# --- Rule preview and test (schema) --------------------------------------------------------


class RulePreviewRequestSerializer(serializers.Serializer):
    method = serializers.CharField()
    url = serializers.CharField()
    headers = serializers.DictField(child=serializers.CharField())
    body = serializers.CharField(allow_blank=True)


class RulePreviewSerializer(serializers.Serializer):
    errors = serializers.ListField(
        child=serializers.CharField(),
        help_text='Blocking problems, "Field: message" (the request is rendered anyway).',
    )
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="Advice, e.g. a macro not recorded yet (renders empty), no {externalid}, a "
        "missing exchange rate.",
    )
    conversion = serializers.CharField(help_text="Where the macro values come from.")
    request = RulePreviewRequestSerializer(help_text="The request as it would be sent.")
    macros = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        help_text="Each macro the templates use, as written, and its value.",
    )
    empty_macros = serializers.ListField(
        child=serializers.CharField(), help_text="Macros used that render empty."
    )


class RuleTestResultSerializer(serializers.Serializer):
    conversion = serializers.CharField(help_text="Where the macro values came from.")
    delivery = DeliverySerializer(help_text="The test delivery (is_test true), final.")
    attempts = AttemptSerializer(many=True, help_text="Its attempt (one: a test is not retried).")
    attempts_url = serializers.CharField(help_text="The attempts list filtered to it.")


RULE_ACTION_ERRORS = {
    400: OpenApiTypes.OBJECT,
    403: OpenApiTypes.OBJECT,
    404: OpenApiTypes.OBJECT,
}

PostbackRuleViewSet = extend_schema_view(
    preview=extend_schema(
        summary="Preview the request of a rule",
        description="The request this rule would send (method, URL, headers, body) and the "
        "macro values used, with the errors and warnings the admin form's preview shows. "
        "``?conversion=<id>``: filled from that conversion; ``?click=<click ID>``: from that "
        "click (for click and impression rules; a conversion rule gets sample conversion "
        "values); neither: sample values. Secret header values are shown ``***``. Needs "
        "``postbacks.view_postbackrule``. Errors: 400 ``invalid`` (malformed id or UUID, "
        "conversion and click both given), 404 ``unknown_conversion`` / ``unknown_click``.",
        parameters=[
            OpenApiParameter(
                "conversion",
                OpenApiTypes.INT,
                description="A conversion id (omitted: sample values). Not with click.",
            ),
            OpenApiParameter(
                "click",
                OpenApiTypes.UUID,
                description="A click ID: its real values (with sample conversion values "
                "for a conversion rule). Not with conversion.",
            ),
        ],
        responses={200: RulePreviewSerializer, **RULE_ACTION_ERRORS},
    ),
    test=extend_schema(
        summary="Send a test postback for a rule",
        description="Sends the rule once, now, in this request (as the admin's test button) "
        "and answers the test delivery (``is_test``, ``delivered`` or ``failed``, never "
        "retried) with its attempt: outcome, HTTP status, masked URL, duration, error. "
        'Body ``{"conversion": <id>}`` for a conversion\'s real values, ``{"click": "<click '
        "ID>\"}`` for a click's (click and impression rules; a conversion rule gets sample "
        "conversion values), or ``{}``. Secret header values are shown ``***``. Needs "
        "``postbacks.change_postbackrule``, ``postbacks.view_delivery`` and "
        "``postbacks.view_attempt`` (the answer is the delivery). Errors: 404 "
        "``unknown_conversion`` / "
        "``unknown_click``, 400 ``invalid`` (malformed id or UUID, conversion and click "
        "both given), 400 ``invalid_rule`` (template errors: nothing sent), 400 "
        "``untestable_kind``.",
        request=RuleActionSerializer,
        responses={200: RuleTestResultSerializer, **RULE_ACTION_ERRORS},
    ),
)(PostbackRuleViewSet)


# --- Macros ------------------------------------------------------------------------------


class MacroSerializer(serializers.Serializer):
    name = serializers.CharField()
    group = serializers.CharField()
    description = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField())
    recorded = serializers.BooleanField(help_text="False: not recorded yet, renders empty.")
    deprecated = serializers.CharField(help_text="Empty, or advice for a deprecated spelling.")


class MacroViewSet(viewsets.ViewSet):
    """The macro catalogue for rule templates: ``{name}`` (or an alias) in a URL, body
    or header template is replaced by the event's value. Any authenticated user."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = MacroSerializer

    @extend_schema(responses=MacroSerializer(many=True))
    def list(self, request: Request) -> Response:
        return Response(MacroSerializer(macros.catalogue(), many=True).data)


def register(router: BaseRouter) -> None:
    """Add this app's viewsets to ``router``."""
    router.register("postback-rules", PostbackRuleViewSet, basename="postbackrule")
    router.register("deliveries", DeliveryViewSet, basename="delivery")
    router.register("attempts", AttemptViewSet, basename="attempt")
    router.register("macros", MacroViewSet, basename="macro")
