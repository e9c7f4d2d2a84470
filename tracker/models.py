"""Clicks, conversions and the inbound request log."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from campaigns.models import Campaign, Offer, TrafficSource

VAR_FIELDS = tuple(f"var{i}" for i in range(1, 11))


class Visit(models.Model):
    """What a click and an impression both record: custom variables var1..var10 (per the
    traffic source's parameters), the visitor's IP, user agent and referrer."""

    var1 = models.CharField(max_length=255, blank=True)
    var2 = models.CharField(max_length=255, blank=True)
    var3 = models.CharField(max_length=255, blank=True)
    var4 = models.CharField(max_length=255, blank=True)
    var5 = models.CharField(max_length=255, blank=True)
    var6 = models.CharField(max_length=255, blank=True)
    var7 = models.CharField(max_length=255, blank=True)
    var8 = models.CharField(max_length=255, blank=True)
    var9 = models.CharField(max_length=255, blank=True)
    var10 = models.CharField(max_length=255, blank=True)
    ip = models.GenericIPAddressField("IP", null=True, blank=True)
    user_agent = models.TextField(blank=True)
    referrer = models.TextField(blank=True)

    class Meta:
        abstract = True


class Click(Visit):
    """One visit through a campaign tracking URL. Its UUID is the click ID."""

    id = models.UUIDField("click ID", primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="clicks")
    offer = models.ForeignKey(
        Offer, null=True, blank=True, on_delete=models.SET_NULL, related_name="clicks"
    )
    traffic_source = models.ForeignKey(
        TrafficSource, on_delete=models.PROTECT, related_name="clicks"
    )
    external_id = models.CharField("external ID", max_length=512, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return str(self.id)


class Conversion(models.Model):
    """A tracked result for a click. One per (click, txid): a repeat is a duplicate."""

    class Status(models.TextChoices):
        APPROVED = "approved", "Approved"
        PENDING = "pending", "Pending"
        REJECTED = "rejected", "Rejected"
        REFUNDED = "refunded", "Refunded / chargeback"

    class Method(models.TextChoices):
        S2S = "s2s", "S2S postback"
        PIXEL = "pixel", "Image pixel"
        SCRIPT = "script", "JS script"
        UPLOAD = "upload", "CSV upload"
        API = "api", "API"

    click = models.ForeignKey(Click, on_delete=models.PROTECT, related_name="conversions")
    txid = models.CharField(
        "transaction ID",
        max_length=255,
        blank=True,
        help_text="Empty when the network sent none; then one conversion per click counts.",
    )
    conversion_type = models.CharField(max_length=64, blank=True, help_text="ct: lead, sale...")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.APPROVED)
    rejection_reason = models.CharField(
        max_length=255,
        blank=True,
        help_text="Rejection reason code as received ({rejection_reason}); see Rejection reasons.",
    )
    rejection_reason_unknown = models.BooleanField(
        "unknown rejection reason",
        default=False,
        help_text="The code is not in the rejection reason list: stored as received, flagged.",
    )
    payout = models.DecimalField(max_digits=16, decimal_places=6, default=Decimal("0"))
    currency = models.CharField(max_length=3, default="USD")
    network_payout = models.DecimalField(
        max_digits=16,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Payout the network sent, kept when a manual offer payout overrides it.",
    )
    params = models.JSONField(default=dict, blank=True, help_text="param1..param20 as sent.")
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.S2S)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status_changed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the status last changed; empty: never."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["click", "txid"], name="uniq_conversion_click_txid")
        ]
        indexes = [models.Index(fields=["txid"], name="conversion_txid_idx")]

    def __str__(self) -> str:
        return f"{self.conversion_type or 'conversion'} {self.txid or self.pk}"


class RejectionReason(models.Model):
    """A reason an affiliate network (or a manager) gives for rejecting a conversion.

    Received as ``rejection_reason`` (or the network's mapped parameter name) on ``/cv``;
    rules may fire only for chosen reasons. Codes not in this list are still stored on the
    conversion and flagged as unknown.
    """

    code = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(r"^[A-Za-z0-9_.\-]{1,64}$", "Use 1-64 letters, digits, '_', '.' or '-'.")
        ],
        help_text="As the network sends it, e.g. fraud, duplicate, invalid_geo (any case).",
    )
    label = models.CharField(max_length=200, help_text="Shown in admin, e.g. Fraud suspected.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.label} ({self.code})"

    def save(self, *args: object, **kwargs: object) -> None:
        self.code = self.code.strip().lower()
        super().save(*args, **kwargs)


class ConversionStatusChange(models.Model):
    """One status change of a conversion (old -> new), by a postback, a user or the API.

    Every change is an event postback rules can fire on (trigger "on status change").
    """

    class Source(models.TextChoices):
        POSTBACK = "postback", "Network postback"
        ADMIN = "admin", "Admin"
        API = "api", "API"
        UPLOAD = "upload", "CSV upload"

    conversion = models.ForeignKey(
        Conversion, on_delete=models.CASCADE, related_name="status_changes"
    )
    old_status = models.CharField(max_length=16, choices=Conversion.Status.choices)
    new_status = models.CharField(max_length=16, choices=Conversion.Status.choices)
    rejection_reason = models.CharField(max_length=255, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    inbound_request = models.ForeignKey(
        "InboundRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    note = models.TextField(blank=True, help_text="Why, e.g. the reason given in admin.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.old_status} -> {self.new_status}"


class Impression(Visit):
    """One ad view counted by the impression pixel ``GET /i/<campaign_key>``."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="impressions")
    traffic_source = models.ForeignKey(
        TrafficSource, on_delete=models.PROTECT, related_name="impressions"
    )
    external_id = models.CharField("external ID", max_length=512, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"impression {self.pk}"


class InboundRequest(models.Model):
    """Every request to a conversion endpoint, accepted or not, with the answer given."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        DUPLICATE = "duplicate", "Duplicate"
        STATUS_CHANGED = "status_changed", "Status changed"
        REJECTED = "rejected", "Rejected"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    endpoint = models.CharField(max_length=32)
    method = models.CharField(max_length=8)
    query = models.TextField(blank=True)
    body = models.TextField(blank=True)
    ip = models.GenericIPAddressField("IP", null=True, blank=True)
    user_agent = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_code = models.CharField(max_length=64, blank=True)
    detail = models.TextField(blank=True)
    conversion = models.ForeignKey(
        Conversion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} -> {self.response_status}"
