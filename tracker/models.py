"""Clicks, conversions and the inbound request log."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, ClassVar

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

from campaigns.models import AffiliateNetwork, Campaign, Lander, Offer, TrafficSource
from tracker.events import Channel

VAR_FIELDS = tuple(f"var{i}" for i in range(1, 11))
# Longer external IDs are refused (400 external_id_too_long), never cut.
EXTERNAL_ID_MAX = 1024


class DeviceType(models.TextChoices):
    """The kinds of device a user agent is classified as (``{device}``)."""

    DESKTOP = "desktop", "Desktop"
    MOBILE = "mobile", "Mobile"
    TABLET = "tablet", "Tablet"
    TV = "tv", "TV"
    CONSOLE = "console", "Console"
    WEARABLE = "wearable", "Wearable"
    BOT = "bot", "Bot"
    OTHER = "other", "Other"


class Visit(models.Model):
    """What a click and an impression both record: custom variables var1..var10 (per the
    traffic source's parameters), the visitor's IP, user agent and referrer, and what is
    derived from them at the visit (see :mod:`tracker.enrichment`): geo from the IP, device,
    OS and browser from the user agent, language, referrer domain. Derived fields are ""
    (or None) when unknown; each has its macro of the ClickFlare token table."""

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
    # Geo, from the IP ({country}, {countryname}, {region}, {city}, {isp}, {carrier},
    # {connection.type}).
    country_code = models.CharField("country", max_length=2, blank=True, help_text="ISO 3166-1.")
    country_name = models.CharField("country name", max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True)
    city = models.CharField(max_length=100, blank=True)
    isp = models.CharField("ISP", max_length=200, blank=True)
    asn = models.PositiveBigIntegerField("ASN", null=True, blank=True)
    carrier = models.CharField(max_length=100, blank=True, help_text="Mobile carrier.")
    connection_type = models.CharField(max_length=32, blank=True)
    # Device, from the user agent ({device}, {brand}, {model}, {os}, {osversion}, {browser},
    # {browserversion}).
    device_type = models.CharField(max_length=16, blank=True, choices=DeviceType.choices)
    device_brand = models.CharField(max_length=64, blank=True)
    device_model = models.CharField(max_length=100, blank=True)
    os = models.CharField("OS", max_length=64, blank=True)
    os_version = models.CharField("OS version", max_length=32, blank=True)
    browser = models.CharField(max_length=64, blank=True)
    browser_version = models.CharField(max_length=32, blank=True)
    is_bot = models.BooleanField("bot", default=False)
    language = models.CharField(
        max_length=16, blank=True, help_text="First language of Accept-Language, e.g. en-US."
    )
    referrer_domain = models.CharField(max_length=255, blank=True)

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
    lander = models.ForeignKey(
        Lander, null=True, blank=True, on_delete=models.SET_NULL, related_name="clicks"
    )
    lander_clicked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the visitor went on from the lander to the offer."
    )
    external_id = models.CharField(
        "external ID", max_length=EXTERNAL_ID_MAX, blank=True, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return str(self.id)


class Conversion(models.Model):
    """A tracked result for a click.

    Deduplication (``dedup_key``, unique per click): with a transaction ID, one conversion
    per (click, txid); without one, one per (click, conversion type), unless the conversion
    type allows several (:class:`ConversionType`) or the network accepts duplicates. A repeat
    is a duplicate, or a status change when it carries another status.
    """

    class Status(models.TextChoices):
        APPROVED = "approved", "Approved"
        PENDING = "pending", "Pending"
        REJECTED = "rejected", "Rejected"
        REFUNDED = "refunded", "Refunded / chargeback"

    Method = Channel  # how it arrived: the one channel enum (tracker.events.Channel)

    # Not a column: set on the instance by the services that load or change a conversion,
    # for the {rejection_reason.label} macro.
    rejection_reason_label: str

    # No index of its own: uniq_conversion_click_dedup (click_id first) serves every lookup.
    click = models.ForeignKey(
        Click, on_delete=models.PROTECT, related_name="conversions", db_index=False
    )
    txid = models.CharField(
        "transaction ID",
        max_length=255,
        blank=True,
        help_text="Empty when none was sent; then one conversion per click and conversion "
        "type counts (unless the type allows several).",
    )
    dedup_key = models.CharField(
        max_length=300,
        editable=False,
        help_text="t:<txid>, c:<conversion type> or m:<unique> (several allowed); unique per "
        "click.",
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
    display_payout = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="The payout in the display currency at the conversion time; empty when no "
        "exchange rate was known. Later rate changes do not rewrite it.",
    )
    display_currency = models.CharField(max_length=3, blank=True)
    exchange_rate = models.DecimalField(
        max_digits=24,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="1 unit of the payout currency in the display currency, as used.",
    )
    network_payout = models.DecimalField(
        max_digits=16,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Payout the network sent, kept when a manual offer payout overrides it.",
    )
    params = models.JSONField(default=dict, blank=True, help_text="param1..param20 as sent.")
    method = models.CharField(
        max_length=10,
        choices=Method.choices,
        default=Method.S2S,
        help_text="How the conversion arrived.",
    )
    is_test = models.BooleanField(
        "test",
        default=False,
        db_index=True,
        help_text="A test conversion: its postbacks are sent marked as test and it is left "
        "out of the dashboard figures.",
    )
    converted_at = models.DateTimeField(
        "conversion time",
        null=True,
        blank=True,
        help_text="When the conversion happened, as the network or upload said (timestamp); "
        "otherwise when it was received.",
    )
    created_at = models.DateTimeField("received", auto_now_add=True, db_index=True)
    status_changed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the status last changed; empty: never."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["click", "dedup_key"], name="uniq_conversion_click_dedup"
            )
        ]
        indexes = [
            models.Index(fields=["txid"], name="conversion_txid_idx"),
            # The method filter (admin, API). A plain index: no query matches a pattern.
            models.Index(fields=["method"], name="conversion_method_idx"),
        ]

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

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.code = self.code.strip().lower()
        super().save(*args, **kwargs)


class ConversionType(models.Model):
    """A conversion type (``ct``: lead, sale, upsell...) and whether one click may have several
    conversions of it without a transaction ID. Types not listed are accepted as sent and
    allow one per click."""

    code = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(r"^[a-z0-9_.\-]+$", "Lower-case letters, digits, '_', '.' or '-'.")
        ],
        help_text="As the network sends it in ct (compared in lower case), e.g. upsell.",
    )
    label = models.CharField(max_length=100, blank=True)
    allow_multiple = models.BooleanField(
        "several per click",
        default=False,
        help_text="Ticked (upsell, rebill): every postback of this type without a transaction "
        "ID is a new conversion. Unticked: a repeat for the same click is a duplicate.",
    )

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.label or self.code


class ExchangeRate(models.Model):
    """How much one unit of ``currency`` is worth in the display currency
    (``TRACKER_DISPLAY_CURRENCY``). Used when a conversion is recorded (its display payout)
    and when a postback rule asks for another currency."""

    currency = models.CharField(
        max_length=3,
        unique=True,
        validators=[RegexValidator(r"^[A-Z]{3}$", "A three-letter ISO 4217 code, e.g. EUR.")],
    )
    rate = models.DecimalField(
        max_digits=24,
        decimal_places=10,
        help_text="1 unit of this currency in the display currency, e.g. 1.08 for EUR when "
        "the display currency is USD. Must be greater than 0.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["currency"]

    def __str__(self) -> str:
        return f"1 {self.currency} = {self.rate.normalize():f}"


class ConversionUpload(models.Model):
    """A CSV file of conversions uploaded in admin, processed row by row by a worker.

    Each row becomes an :class:`InboundRequest` (channel upload, ``row_number``) with its
    result; a row is imported whole or not at all.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    file_name = models.CharField(max_length=255)
    content = models.TextField(help_text="The file as uploaded (UTF-8).")
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    status_changes = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the whole file failed, if it did.")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    progress_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When processing last started or wrote its progress; an upload queued or "
        "running whose progress stops for TRACKER_UPLOAD_STALLED_SECONDS is processed again.",
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.created_at:%Y-%m-%d %H:%M})"


class ConversionStatusChange(models.Model):
    """One status change of a conversion (old -> new), by a postback, a user or the API.

    Every change is an event postback rules can fire on (trigger "on status change").
    """

    Source = Channel  # how it arrived: the one channel enum (tracker.events.Channel)

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
    external_id = models.CharField("external ID", max_length=EXTERNAL_ID_MAX, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"impression {self.pk}"


class InboundRequest(models.Model):
    """Every conversion that tried to enter, by any method (S2S, pixel, script, upload row,
    API, admin), accepted or not, with the answer given."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        DUPLICATE = "duplicate", "Duplicate"
        STATUS_CHANGED = "status_changed", "Status changed"
        UNKNOWN_CLICK = "unknown_click", "Unknown click ID"
        FORBIDDEN = "forbidden", "Forbidden"
        INVALID = "invalid", "Invalid"
        ERROR = "error", "Server error"
        REJECTED = "rejected", "Refused (before 2026-11)"

    Channel = Channel  # the one channel enum (tracker.events.Channel)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    channel = models.CharField("method", max_length=8, choices=Channel.choices, default=Channel.S2S)
    network = models.ForeignKey(
        AffiliateNetwork,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="From the network's postback URL, or from the click's offer.",
    )
    click_id = models.CharField("click ID", max_length=64, blank=True)
    upload = models.ForeignKey(
        ConversionUpload,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rows",
        db_index=False,  # inbound_upload_row_idx (upload_id first) serves it
    )
    row_number = models.PositiveIntegerField(null=True, blank=True)
    visit_at = models.DateTimeField("visit time", null=True, blank=True)
    converted_at = models.DateTimeField("conversion time", null=True, blank=True)
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
        verbose_name = "inbound conversion"
        verbose_name_plural = "Conversions — In"
        indexes = [
            models.Index(fields=["outcome", "-created_at"], name="inbound_outcome_idx"),
            models.Index(fields=["upload", "row_number"], name="inbound_upload_row_idx"),
            # The method filter and the click ID search (admin, API): exact values only, so
            # plain indexes (no varchar_pattern_ops twin).
            models.Index(fields=["channel"], name="inbound_channel_idx"),
            models.Index(fields=["click_id"], name="inbound_click_id_idx"),
            models.Index(
                fields=["error_code", "-created_at"],
                name="inbound_error_code_idx",
                condition=~models.Q(error_code=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} -> {self.response_status}"


class APITokenManager(APIKeyManager):
    def get_usable_keys(self) -> models.QuerySet:
        """Tokens not revoked, with their user (one query per authenticated call)."""
        return super().get_usable_keys().select_related("user")


class APIToken(AbstractAPIKey):
    """A REST API token (``Authorization: Token <prefix>.<secret>``): the API acts as
    ``user``, whose Django model permissions apply. Stored hashed (SHA-512, per
    djangorestframework-api-key); the full token is shown once, when it is created in
    admin. Revoking is final; ``expiry_date`` optional."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_tokens",
        help_text="The API acts as this user: what the user may view, add, change or delete "
        "in admin (model permissions), the token may too.",
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects: ClassVar[APITokenManager] = APITokenManager()

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API token"
        verbose_name_plural = "API tokens"


class TaskRun(models.Model):
    """The last run of a periodic task of the beat schedule (``CELERY_BEAT_SCHEDULE``).

    Written by the worker when such a task ends (:func:`tracker.health.task_run_record`),
    one row per task name: a stale ``finished_at`` means beat (or every worker) is silent.
    """

    name = models.CharField(max_length=200, unique=True, help_text="The Celery task name.")
    finished_at = models.DateTimeField()
    state = models.CharField(max_length=16, help_text="Celery's state: SUCCESS, FAILURE...")
    detail = models.CharField(max_length=500, blank=True, help_text="What it returned.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} {self.state} at {self.finished_at:%Y-%m-%d %H:%M:%S}"
