"""The postback rules resource (``/api/v1/postback-rules/``): CRUD validated by the domain's
rule form (:mod:`postbacks.rules`), signing-secret rotation, and the ``preview`` and
``test`` actions (their serializers in :mod:`postbacks.api.previews`). Secrets in the
templates (header values, URL parameter values such as ``token=``) are write-only
(:mod:`postbacks.masking`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import django_filters
from django.core.exceptions import ValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from postbacks import preview, services
from postbacks.api.common import HasPermissions, inline_enum
from postbacks.api.log import AttemptSerializer, DeliverySerializer
from postbacks.api.previews import RULE_ACTIONS_SCHEMA, RuleActionSerializer
from postbacks.masking import (
    MASK,
    MaskedValueMissing,
    mask_header_lines,
    mask_headers,
    mask_secrets,
    secret_hint,
    unmask_header_lines,
    unmask_secrets,
)
from postbacks.models import Attempt, Delivery, PostbackRule
from postbacks.rules import (
    PostbackRuleForm,
    describe_conversion,
    form_messages,
    preview_answer,
)
from postbacks.transports import get_transport, kind_help
from tracker import currency, macros
from tracker.api.base import StrictModelSerializer, StrictSerializer
from tracker.api.errors import DomainError
from tracker.models import Conversion

SCOPE_FIELDS = ("campaigns", "offers", "traffic_sources", "affiliate_networks", "rejection_reasons")


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
            *PostbackRuleForm.Meta.fields,
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
        return {
            "signed": bool(obj.signing_secret),
            "secret_hint": secret_hint(obj.signing_secret),
            "previous_valid_until": obj.previous_secret_until(),
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

    def clean_instance(  # type: ignore[override]  # only ever given this serializer's model
        self, instance: PostbackRule, attrs: dict[str, Any]
    ) -> None:
        """Run the admin's rule form on the values as they would be saved: its field
        checks and the transport's (unknown macros, ``{var:...}`` of the chosen sources)."""
        data = self._form_data(attrs)
        if getattr(self, "_clear_token", False):
            data["clear_access_token"] = "on"
        form = PostbackRuleForm(data, instance=self._copy())
        if not form.is_valid():
            raise serializers.ValidationError(
                {
                    (field if field in self.fields else "non_field_errors"): list(map(str, errors))
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
        for name in PostbackRuleForm.Meta.fields:
            value: Any
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

    def perform_update(self, serializer: serializers.BaseSerializer[PostbackRule]) -> None:
        rule = cast(PostbackRule, serializer.instance)  # an update has its instance
        was_active = rule.is_active
        active = serializer.validated_data.get("is_active", was_active)
        if active and not was_active:
            rule.clear_failures()
        serializer.save()
        if was_active and not active:
            services.rules_deactivate([rule.pk], **self._reason("deactivated"))

    def perform_destroy(self, instance: PostbackRule) -> None:
        with transaction.atomic():
            services.rules_deactivate([instance.pk], **self._reason("deleted"))
            instance.delete()

    def _reason(self, what: str) -> dict[str, str]:
        """``rules_deactivate``'s reason and who: recorded in each cancelled delivery."""
        who = self.request.user.get_username()
        return {"reason": f"the rule was {what}.", "by": f"{who} (API)"}

    # Preview and test: the admin rule form's (``postbacks.preview``), on the saved rule.
    # Documented by ``extend_schema_view`` below, once the delivery serializers exist.

    def get_permissions(self) -> Sequence[Any]:
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


class ChangeRulePermission(HasPermissions):
    """Sending a test postback: ``postbacks.change_postbackrule``; the answer is the test
    delivery and its attempt, so ``postbacks.view_delivery`` and ``view_attempt`` too."""

    perms = ("postbacks.change_postbackrule", "postbacks.view_delivery", "postbacks.view_attempt")


class SigningSecretPermission(HasPermissions):
    """Setting or removing the signing secret: ``postbacks.change_postbackrule``."""

    perms = ("postbacks.change_postbackrule",)


# The same class, decorated.
PostbackRuleViewSet = extend_schema_view(**RULE_ACTIONS_SCHEMA)(PostbackRuleViewSet)  # type: ignore[misc]
