"""Postback rules (what to fire), deliveries (one planned firing) and attempts (the log)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from campaigns.models import AffiliateNetwork, Campaign, Offer, TrafficSource
from postbacks.transports import KIND_CHOICES, Outcome, get_transport
from tracker.models import Conversion

MAX_DELAY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Scope:
    """What an event belongs to, for matching rule scopes."""

    campaign_id: int
    offer_id: int | None
    traffic_source_id: int
    affiliate_network_id: int | None


class EventType(models.TextChoices):
    IMPRESSION = "impression", "Impression"
    CLICK = "click", "Click"
    CONVERSION = "conversion", "Conversion"
    EVENT = "event", "Event (after a conversion)"


class PostbackRule(models.Model):
    """What to fire, when and where.

    Scope: a rule applies to every campaign, offer, traffic source and affiliate network
    unless some are chosen; then the event must belong to one of the chosen ones in each
    non-empty list. Firing conditions: conversion statuses and conversion types (empty = any).
    """

    name = models.CharField(max_length=200)
    event_type = models.CharField(
        max_length=16, choices=EventType.choices, default=EventType.CONVERSION
    )
    is_active = models.BooleanField(default=True)
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
        help_text="The traffic source's postback URL with macros, e.g. "
        "https://trc.taboola.com/actions-handler/log/3/s2s-action?click-id={externalid}"
        "&name=lead&revenue={payout}&currency={payout_currency}. Macro values are URL-encoded.",
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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.url_template:
            try:
                get_transport(self.kind).validate_template(self.url_template)
            except ValidationError as exc:
                errors["url_template"] = exc.messages
        bad = sorted(set(self.statuses or []) - set(Conversion.Status.values))
        if bad:
            errors["statuses"] = [f"Unknown status: {', '.join(bad)}."]
        if errors:
            raise ValidationError(errors)

    def matches(self, scope: Scope, status: str = "", conversion_type: str = "") -> bool:
        """True when this rule's scope and firing conditions accept the event.

        Needs the M2M ids prefetched (see ``services.rules_for``) to stay query-free.
        """
        chosen = (
            (self.campaigns.all(), scope.campaign_id),
            (self.offers.all(), scope.offer_id),
            (self.traffic_sources.all(), scope.traffic_source_id),
            (self.affiliate_networks.all(), scope.affiliate_network_id),
        )
        for objects, object_id in chosen:
            ids = {o.pk for o in objects}
            if ids and object_id not in ids:
                return False
        if self.event_type in (EventType.CONVERSION, EventType.EVENT):
            if self.statuses and status not in self.statuses:
                return False
            types = {t.lower() for t in self.conversion_types or []}
            if types and conversion_type.lower() not in types:
                return False
        return True


class DeliveryQuerySet(models.QuerySet):
    """Named sets of deliveries the pipeline works on (each backed by a partial index)."""

    def due(self, now) -> DeliveryQuerySet:
        """Scheduled and due at ``now``: what a dispatcher claims next."""
        return self.filter(status=Delivery.Status.SCHEDULED, due_at__lte=now)

    def in_flight(self) -> DeliveryQuerySet:
        """Claimed by a worker, an attempt under way."""
        return self.filter(status=Delivery.Status.SENDING)

    def stuck(self, now, live_workers: list[str]) -> DeliveryQuerySet:
        """In flight past their lease, or claimed by a worker that stopped beating."""
        return self.in_flight().filter(
            Q(lease_expires_at__lt=now) | ~Q(claimed_by__in=live_workers)
        )

    def waiting(self) -> DeliveryQuerySet:
        """Not yet sent or between two attempts: what replay and cancel may act on."""
        return self.filter(status=Delivery.Status.SCHEDULED)


class Delivery(models.Model):
    """One planned firing of one rule for one event; the unit that is retried.

    The request is rendered when the event is written, so a retry or a replay sends
    exactly what was planned. Status moves scheduled -> sending -> delivered | failed,
    or back to scheduled for a retry.
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    public_id = models.UUIDField(
        "delivery ID",
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text="Stable ID sent with every attempt ({delivery.id}, Idempotency-Key header): "
        "delivery is at least once, receivers deduplicate on it.",
    )
    rule = models.ForeignKey(
        PostbackRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    event_type = models.CharField(max_length=16, choices=EventType.choices)
    click = models.ForeignKey("tracker.Click", on_delete=models.CASCADE, related_name="+")
    conversion = models.ForeignKey(
        "tracker.Conversion", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    traffic_source = models.ForeignKey(
        TrafficSource, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    kind = models.CharField("destination", max_length=32, choices=KIND_CHOICES)
    method = models.CharField(max_length=8, default="GET")
    url = models.TextField("URL")
    host = models.CharField(
        max_length=255, blank=True, help_text="Destination host:port, for per-host concurrency."
    )
    body = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    due_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(
        max_length=100, blank=True, help_text="The worker process sending it (while sending)."
    )
    attempt_count = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=10)
    retry_base_seconds = models.PositiveIntegerField(default=60)
    timeout_seconds = models.PositiveSmallIntegerField(default=10)
    last_status_code = models.PositiveSmallIntegerField("last HTTP status", null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["status", "due_at"], name="delivery_status_due_idx"),
            # The rows still to send or in flight: few, whatever the size of the table.
            models.Index(
                fields=["due_at", "id"],
                condition=Q(status="scheduled"),
                name="delivery_due_idx",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="sending"),
                name="delivery_in_flight_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_status_display()}"


class Attempt(models.Model):
    """One HTTP request of a delivery: a row of the postback log."""

    Outcome = Outcome

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField(db_index=True)
    method = models.CharField(max_length=8)
    url = models.TextField(
        "URL", help_text="As sent, with secrets masked (see POSTBACKS_MASK_PARAMS)."
    )
    status_code = models.PositiveSmallIntegerField("HTTP status", null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField("duration (ms)", default=0)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["outcome", "started_at"], name="attempt_outcome_idx")]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="uniq_attempt_number")
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id}#{self.number} {self.outcome}"


class Worker(models.Model):
    """A dispatcher process: claims deliveries as ``name`` and beats every few seconds.

    The sweeper takes back the deliveries of a worker whose heartbeat is older than
    ``POSTBACKS_WORKER_DEAD_SECONDS`` without waiting for their leases.
    """

    name = models.CharField(max_length=100, unique=True, help_text="host:pid:token")
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-heartbeat_at"]

    def __str__(self) -> str:
        return self.name
