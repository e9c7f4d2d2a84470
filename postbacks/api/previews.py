"""What the rule preview and test actions take and answer (``postback-rules/{id}/preview/``
and ``/test/``): the event to fill the macros from (a conversion, a click or samples), the
rendered request, the test delivery with its attempt, and their schema."""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers

from postbacks.api.log import AttemptSerializer, DeliverySerializer
from tracker.api.errors import DomainError
from tracker.models import Click, Conversion


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


class RulePreviewRequestSerializer(serializers.Serializer):
    method = serializers.CharField()
    url = serializers.CharField()
    headers = serializers.DictField(child=serializers.CharField())
    body = serializers.CharField(allow_blank=True)


class RulePreviewSerializer(serializers.Serializer):
    # A field named errors: the serializer metaclass moves it out of the class attributes.
    errors = serializers.ListField(  # type: ignore[assignment]
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


# The schema of the rule viewset's preview and test actions (``extend_schema_view``).
RULE_ACTIONS_SCHEMA = dict(
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
)
