"""The postback rule: what to fire (event type, scope, firing conditions), where (the
destination of its kind) and how (retries, timeout, signing, auto-disable)."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from campaigns.models import AffiliateNetwork, Campaign, Offer, TrafficSource
from postbacks.choices import (
    EVENT_TYPE_HELP,
    MAX_DELAY_SECONDS,
    BodyFormat,
    EventType,
    HttpMethod,
    SuccessMode,
    Trigger,
)
from postbacks.matching import RuleMatching
from postbacks.transports import KIND_CHOICES, Secrets, get_transport
from tracker import currency
from tracker.models import Conversion


class PostbackRule(RuleMatching, models.Model):
    """What to fire, when and where.

    Scope: a rule applies to every campaign, offer, traffic source and affiliate network
    unless some are chosen; then the event must belong to one of the chosen ones in each
    non-empty list. Firing conditions: conversion statuses and conversion types (empty = any).
    """

    name = models.CharField(max_length=200)
    event_type = models.CharField(
        "type",
        max_length=16,
        choices=EventType.choices,
        default=EventType.CONVERSION,
        help_text=EVENT_TYPE_HELP,
    )
    is_active = models.BooleanField(
        "active",
        default=True,
        help_text="Inactive rules fire nothing; deactivating cancels their scheduled deliveries.",
    )
    replaces_global = models.BooleanField(
        "replaces global rules",
        default=False,
        help_text="When this rule has a scope and matches an event, the global rules (no "
        "scope chosen) of the same type do not fire for that event. Unticked: it fires in "
        "addition to them.",
    )
    campaigns = models.ManyToManyField(
        Campaign, blank=True, related_name="+", help_text="Empty: all campaigns."
    )
    offers = models.ManyToManyField(
        Offer, blank=True, related_name="+", help_text="Empty: all offers."
    )
    traffic_sources = models.ManyToManyField(
        TrafficSource, blank=True, related_name="+", help_text="Empty: all traffic sources."
    )
    affiliate_networks = models.ManyToManyField(
        AffiliateNetwork, blank=True, related_name="+", help_text="Empty: all affiliate networks."
    )
    statuses = models.JSONField(
        default=list,
        blank=True,
        help_text="Conversion statuses that fire this rule; empty: any status.",
    )
    trigger = models.CharField(
        max_length=10,
        choices=Trigger.choices,
        default=Trigger.BOTH,
        help_text="Fire when a conversion is created with a chosen status, when its status "
        "changes to one (a lead sent pending, approved later), or both.",
    )
    rejection_reasons = models.ManyToManyField(
        "tracker.RejectionReason",
        blank=True,
        related_name="+",
        help_text="Fire only for rejected conversions with one of these reasons. Empty: any "
        "reason (or none).",
    )
    first_only = models.BooleanField(
        "first conversion only",
        default=False,
        help_text="Fire only for the first conversion of a click, not for later ones.",
    )
    conversion_types = models.JSONField(
        default=list,
        blank=True,
        help_text="Conversion types (ct) that fire this rule, e.g. lead, sale; empty: any type.",
    )
    delay_seconds = models.PositiveIntegerField(
        "delay",
        default=0,
        validators=[MaxValueValidator(MAX_DELAY_SECONDS)],
        help_text="Seconds to wait before the first attempt (0..604800), e.g. for fraud checks.",
    )
    kind = models.CharField(
        "destination", max_length=32, choices=KIND_CHOICES, default=KIND_CHOICES[0][0]
    )
    url_template = models.CharField(
        "postback URL",
        max_length=2000,
        blank=True,
        help_text="The traffic source's postback URL with macros, e.g. "
        "https://trc.taboola.com/actions-handler/log/3/s2s-action?click-id={externalid}"
        "&name=lead&revenue={payout}&currency={payout_currency}. Macro values are URL-encoded.",
    )
    payout_currency = models.CharField(
        "payout currency",
        max_length=3,
        blank=True,
        validators=[RegexValidator(r"^[A-Z]{3}$", "A three-letter ISO 4217 code, e.g. EUR.")],
        help_text="Blank: {payout} in the conversion's own currency. A code (e.g. EUR): "
        "{payout} converted with the exchange rates at sending time and {payout_currency} "
        "set to it; without a rate for either currency the payout is sent unconverted.",
    )
    http_method = models.CharField(
        "HTTP method", max_length=8, choices=HttpMethod.choices, default=HttpMethod.GET
    )
    body_format = models.CharField(
        max_length=8,
        choices=BodyFormat.choices,
        default=BodyFormat.NONE,
        help_text="POST only: how the body template is sent and escaped.",
    )
    body_template = models.TextField(
        blank=True,
        help_text="POST body with macros. Form: name={macro}&... (values URL-encoded). "
        'JSON: {"click_id": "{externalid}", "value": {payout|0}} (values JSON-escaped).',
    )
    headers_template = models.TextField(
        "headers",
        blank=True,
        help_text="One 'Name: value' per line, macros allowed, e.g. Authorization: Bearer xyz.",
    )
    success_mode = models.CharField(
        "success when",
        max_length=10,
        choices=SuccessMode.choices,
        default=SuccessMode.STATUS,
        help_text='Some sources answer 200 {"success": false}: require a text or pattern '
        "in the body for the attempt to count as delivered.",
    )
    success_pattern = models.CharField(
        "expected body",
        max_length=500,
        blank=True,
        help_text='Text (or regular expression) the answer must contain, e.g. "success":true.',
    )
    disable_after_failures = models.PositiveSmallIntegerField(
        "auto-disable after",
        default=0,
        validators=[MaxValueValidator(1000)],
        help_text="Deactivate the rule after this many deliveries in a row failed for good "
        "(0: never). A 410 Gone answer deactivates it at once. Admin shows a banner.",
    )
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    disabled_reason = models.TextField(
        blank=True, help_text="Why the rule was deactivated automatically."
    )
    disabled_at = models.DateTimeField(null=True, blank=True)
    needs_attention = models.BooleanField(
        default=False,
        help_text="Deactivated automatically and not yet acknowledged: shown as a banner.",
    )
    preset = models.CharField(
        max_length=64, blank=True, help_text="The traffic-source preset the template came from."
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(30)],
        help_text="Attempts before the delivery is marked failed (1..30).",
    )
    retry_base_seconds = models.PositiveIntegerField(
        "retry base",
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="First retry wait in seconds; doubles after each failure (±20% jitter), "
        "at most 6 h. 60 s with 10 attempts retries for about 8.5 h.",
    )
    timeout_seconds = models.PositiveSmallIntegerField(
        "timeout",
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="Seconds allowed for the whole answer (1..60): one wall-clock deadline for "
        "connecting, the headers and the body; a destination still answering then is cut off "
        "and the attempt retried.",
    )
    # Destination settings beyond the URL (see each transport's docstring for its use).
    signing_secret = models.CharField(
        "signing secret",
        max_length=120,
        blank=True,
        help_text="Standard Webhooks secret (whsec_...): when set, every request carries "
        "webhook-id (the delivery ID), webhook-timestamp and webhook-signature, so the "
        "receiver can check it came from us. Generated or rotated here; shown once.",
    )
    previous_signing_secret = models.CharField(max_length=120, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Until then requests are also signed with the previous secret (rotation).",
    )
    access_token = models.CharField(
        "access token",
        max_length=500,
        blank=True,
        help_text="Meta: a Conversions API access token. TikTok: an Events API access token. "
        "Telegram: the bot token from @BotFather. Slack, Discord: the channel's webhook URL. "
        "Never shown again once saved.",
    )
    account_id = models.CharField(
        "pixel / chat ID",
        max_length=200,
        blank=True,
        help_text="Meta: the pixel (dataset) ID. TikTok: the pixel code. Telegram: the chat "
        "ID (e.g. -1001234567890 or @channel).",
    )
    api_version = models.CharField(
        "API version",
        max_length=16,
        blank=True,
        validators=[RegexValidator(r"^v\d+(\.\d+)?$", "A version such as v21.0.")],
        help_text="Meta Graph API or TikTok API version, e.g. v25.0 / v1.3; blank: those.",
    )
    test_event_code = models.CharField(
        "test event code",
        max_length=100,
        blank=True,
        help_text="Meta / TikTok: events go to the platform's Test Events tool, not to your "
        "reports. Clear it once the integration is checked.",
    )
    event_names = models.JSONField(
        "event names",
        default=dict,
        blank=True,
        help_text='Conversion type -> the platform\'s event name, e.g. {"sale": "Purchase", '
        '"lead": "Lead"}; "*" for any other type. Blank: the platform\'s standard names.',
    )
    field_mapping = models.TextField(
        "field mapping",
        blank=True,
        help_text="CRM webhook: one 'key = value' per line; the value is a macro, text, or "
        "both (e.g. lead.payout = {payout}, source = tracker); dotted keys nest objects. "
        "Blank: the standard conversion, click, campaign, offer and traffic source fields.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Validate the destination (URL, body, headers, success pattern) with the transport
        of this kind, the statuses and the payout currency (ISO 4217). Warnings are left to
        the caller (``get_transport(kind).validate(rule)`` returns them)."""
        errors: dict[str, list[str]] = {}
        try:
            get_transport(self.kind).validate(self)
        except ValidationError as exc:
            errors.update(exc.message_dict)
        except KeyError:
            errors["kind"] = [f"Unknown destination kind {self.kind!r}."]
        bad = sorted(set(self.statuses or []) - set(Conversion.Status.values))
        if bad:
            errors["statuses"] = [f"Unknown status: {', '.join(bad)}."]
        if self.payout_currency and not currency.is_known(self.payout_currency):
            errors["payout_currency"] = [
                f"{self.payout_currency} is not an ISO 4217 currency code (e.g. EUR)."
            ]
        if errors:
            raise ValidationError(errors)

    def secrets(self, now: datetime | None = None) -> Secrets:
        """What the transport adds at sending time: the signing secret (and the previous
        one until ``previous_secret_expires_at``) and the access token."""
        keys = [self.signing_secret] if self.signing_secret else []
        if self.previous_secret_until(now) is not None:
            keys.append(self.previous_signing_secret)
        return Secrets(signing=tuple(keys), access_token=self.access_token)

    def previous_secret_until(self, now: datetime | None = None) -> datetime | None:
        """Until when the previous signing secret also signs (after a rotation); None when
        it does not: there is none, or its time is over."""
        expires = self.previous_secret_expires_at
        if self.previous_signing_secret and expires and expires > (now or timezone.now()):
            return expires
        return None

    def clear_failures(self) -> None:
        """Start the failure streak and the attention banner afresh, as for a rule switched
        back on by hand (``services.rules_enable`` does it for many); the caller saves."""
        self.needs_attention = False
        self.consecutive_failures = 0
