"""Deliveries (one planned firing of a rule for one event), attempts (its HTTP requests:
the postback log) and the dispatcher processes that send them."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from django.db import models
from django.db.models import Q
from django.utils import timezone

from campaigns.models import TrafficSource
from postbacks.answers import storable
from postbacks.choices import EventType, SuccessMode
from postbacks.masking import mask_secrets
from postbacks.models.rules import PostbackRule
from postbacks.transports import KIND_CHOICES, Outcome, PreparedRequest, Result
from tracker.models import Click, Conversion, Impression


def destination_host(url: str) -> str:
    """``host:port`` of a URL, lower-cased ('' when it has none); the per-host cap's key."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or ''}"[:255]
    except ValueError:
        return ""


class DeliveryQuerySet(models.QuerySet):
    """Named sets of deliveries the pipeline works on (each backed by a partial index)."""

    def due(self, now: datetime) -> DeliveryQuerySet:
        """Scheduled and due at ``now``: what a dispatcher claims next."""
        return self.filter(status=Delivery.Status.SCHEDULED, due_at__lte=now)

    def in_flight(self) -> DeliveryQuerySet:
        """Claimed by a worker, an attempt under way."""
        return self.filter(status=Delivery.Status.SENDING)

    def stuck(self, now: datetime, live_workers: list[str]) -> DeliveryQuerySet:
        """In flight past their lease, or claimed by a worker that stopped beating."""
        return self.in_flight().filter(
            Q(lease_expires_at__lt=now) | ~Q(claimed_by__in=live_workers)
        )

    def waiting(self) -> DeliveryQuerySet:
        """Not yet sent or between two attempts: what replay and cancel may act on."""
        return self.filter(status=Delivery.Status.SCHEDULED)

    def cancel(self, reason: str, *, by: str = "") -> int:
        """Cancel the deliveries of this set still waiting (in flight and finished ones are
        left alone); the one way any code cancels. ``last_error`` records who or what and
        why, as the trace and the log show it: "Cancelled by <by>: <reason>", or
        "Cancelled: <reason>" when ``by`` is empty (the reason names the cause). Returns how
        many were cancelled."""
        text = f"Cancelled by {by}: {reason}" if by else f"Cancelled: {reason}"
        return self.waiting().update(
            status=Delivery.Status.CANCELLED, last_error=text, updated_at=timezone.now()
        )


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
    click = models.ForeignKey(
        "tracker.Click", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    conversion = models.ForeignKey(
        "tracker.Conversion", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    impression = models.ForeignKey(
        "tracker.Impression", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    event_detail = models.CharField(
        "planned for",
        max_length=200,
        blank=True,
        help_text="What planned it, e.g. 'created approved' or 'status pending -> approved'.",
    )
    is_test = models.BooleanField(
        "test",
        default=False,
        help_text="Sent from the rule form's test button, or for a test conversion. Test "
        "deliveries are left out of the dashboard and never count toward auto-disable.",
    )
    traffic_source = models.ForeignKey(
        TrafficSource, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Unique by a constraint rather than unique=True: no varchar_pattern_ops twin index,
    # which no query would use (the key is only ever written).
    idempotency_key = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    kind = models.CharField("destination", max_length=32, choices=KIND_CHOICES)
    method = models.CharField(max_length=8, default="GET")
    url = models.TextField("URL")
    host = models.CharField(
        max_length=255, blank=True, help_text="Destination host:port, for per-host concurrency."
    )
    body = models.TextField(blank=True)
    headers = models.JSONField(default=dict, blank=True)
    success_mode = models.CharField(
        max_length=10, choices=SuccessMode.choices, default=SuccessMode.STATUS
    )
    success_pattern = models.CharField(max_length=500, blank=True)
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
    created_at = models.DateTimeField(auto_now_add=True)  # delivery_created_idx serves it
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        constraints = [
            # The name PostgreSQL gave the column's UNIQUE when the table was created.
            models.UniqueConstraint(
                fields=["idempotency_key"], name="postbacks_delivery_idempotency_key_key"
            )
        ]
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
            # The delivery log in admin: its order (and deep pages), the last HTTP status
            # filter, and the dashboard's finished deliveries per source (postbacks.dashboard).
            models.Index(fields=["created_at", "id"], name="delivery_created_idx"),
            # Test deliveries (few): the API's and admin's is_test filter.
            models.Index(
                fields=["created_at", "id"], condition=Q(is_test=True), name="delivery_test_idx"
            ),
            models.Index(
                fields=["last_status_code", "created_at"], name="delivery_last_status_idx"
            ),
            models.Index(
                fields=["updated_at", "traffic_source", "status"],
                condition=Q(status__in=["delivered", "failed"], is_test=False),
                name="delivery_finished_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_status_display()}"

    @classmethod
    def planned(
        cls,
        rule: PostbackRule,
        request: PreparedRequest,
        *,
        public_id: uuid.UUID,
        due_at: datetime,
        idempotency_key: str,
        event_detail: str = "",
        click: Click | None = None,
        conversion: Conversion | None = None,
        impression: Impression | None = None,
        traffic_source_id: int | None = None,
        is_test: bool = False,
        **fields: object,
    ) -> Delivery:
        """An unsaved delivery of ``rule`` (None when the rule is unsaved, e.g. a test from
        the form) that sends ``request`` as its transport prepared it (method, URL, body,
        headers, success mode and pattern), due at ``due_at``, with the rule's attempt
        settings; ``event_detail`` is cut at 200 characters. ``fields`` set any other column
        (a test send: ``attempt_count=1, max_attempts=1``)."""
        values: dict[str, object] = {
            "public_id": public_id,
            "rule": rule if rule.pk else None,
            "event_type": rule.event_type,
            "click": click,
            "conversion": conversion,
            "impression": impression,
            "traffic_source_id": traffic_source_id,
            "idempotency_key": idempotency_key,
            "event_detail": event_detail[:200],
            "is_test": is_test,
            "kind": rule.kind,
            "method": request.method,
            "url": request.url,
            "host": destination_host(request.url),
            "body": request.body,
            "headers": request.headers,
            "success_mode": request.success_mode,
            "success_pattern": request.success_pattern,
            "due_at": due_at,
            "max_attempts": rule.max_attempts,
            "retry_base_seconds": rule.retry_base_seconds,
            "timeout_seconds": rule.timeout_seconds,
        }
        return cls(**{**values, **fields})


# An attempt slower than this (milliseconds) is "slow" in the postback log's filters (admin,
# API) and counted apart by the dashboard's index (attempt_slow_idx).
SLOW_MS = 1000


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
        indexes = [
            models.Index(fields=["outcome", "started_at"], name="attempt_outcome_idx"),
            # The postback log in admin: its order (and deep pages), the HTTP status filter
            # and the slow filter (SLOW_MS).
            models.Index(fields=["started_at", "id"], name="attempt_started_idx"),
            models.Index(fields=["status_code", "started_at"], name="attempt_status_code_idx"),
            models.Index(
                fields=["started_at", "id"],
                condition=Q(duration_ms__gt=1000),
                name="attempt_slow_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="uniq_attempt_number")
        ]

    def __str__(self) -> str:
        return f"{self.delivery_id}#{self.number} {self.outcome}"

    @classmethod
    def logged(
        cls,
        *,
        delivery_id: int,
        number: int,
        started_at: datetime,
        method: str,
        url: str,
        outcome: str,
        error: str = "",
        result: Result | None = None,
    ) -> Attempt:
        """An unsaved log row for attempt ``number`` of a delivery: the URL and error with
        secrets masked (:func:`~postbacks.masking.mask_secrets`), the status, answer and
        duration of ``result`` (None: the attempt got no answer, e.g. its worker was lost),
        every text made :func:`~postbacks.answers.storable` (no NUL byte can fail the
        write). ``error`` defaults to the result's."""
        return cls(
            delivery_id=delivery_id,
            number=number,
            started_at=started_at,
            method=method,
            url=storable(mask_secrets(url)),
            status_code=result.status_code if result else None,
            response_body=storable(result.response_body) if result else "",
            error=storable(mask_secrets(error or (result.error if result else ""))),
            duration_ms=result.duration_ms if result else 0,
            outcome=outcome,
        )


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
