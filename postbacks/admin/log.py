"""The delivery log in admin: deliveries, attempts and dispatcher workers."""

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import ngettext

from postbacks import services
from postbacks.masking import mask_secrets
from postbacks.models import Attempt, Delivery, Worker
from tracker.admin import ClickSearchMixin, ReadOnlyAdminMixin

BADGE_COLOURS = {"delivered": "#2e7d32", "failed": "#c62828", "sending": "#1565c0"}


def status_badge(value: str, label: str) -> str:
    """A coloured status label: green delivered, red failed, blue sending, grey otherwise."""
    return format_html('<b style="color:{}">{}</b>', BADGE_COLOURS.get(value, "#8a6d00"), label)


class HttpStatusFilter(admin.SimpleListFilter):
    title = "HTTP status"
    parameter_name = "http"
    field = "status_code"

    def lookups(self, request, model_admin):
        return [
            ("2xx", "2xx success"),
            ("3xx", "3xx redirect"),
            ("4xx", "4xx client error"),
            ("5xx", "5xx server error"),
            ("none", "No response (timeout, connection error)"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "none":
            return queryset.filter(**{f"{self.field}__isnull": True})
        if value and value[0] in "2345":
            low = int(value[0]) * 100
            return queryset.filter(**{f"{self.field}__gte": low, f"{self.field}__lt": low + 100})
        return queryset


class LastHttpStatusFilter(HttpStatusFilter):
    title = "last HTTP status"
    field = "last_status_code"


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "started_at",
        "outcome",
        "status_code",
        "duration_ms",
        "error",
        "url",
        "response_body",
    )
    readonly_fields = fields
    ordering = ("number",)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ClickSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "status_badge",
        "rule",
        "traffic_source",
        "event_type",
        "attempt_count",
        "last_status_code",
        "due_at",
        "short_error",
    )
    list_filter = (
        "status",
        LastHttpStatusFilter,
        "event_type",
        "rule",
        "traffic_source",
        "created_at",
    )
    list_select_related = ("rule", "traffic_source")
    date_hierarchy = "created_at"
    click_prefix = "click__"
    txid_lookup = "conversion__txid"
    inlines = [AttemptInline]
    actions = ["retry_now", "cancel"]
    fields = (
        "status",
        "rule",
        "event_type",
        "kind",
        "click",
        "conversion",
        "traffic_source",
        "public_id",
        "method",
        "masked_url",
        "host",
        "due_at",
        "attempt_count",
        "max_attempts",
        "last_status_code",
        "last_error",
        "delivered_at",
        "claimed_by",
        "lease_expires_at",
        "created_at",
    )
    readonly_fields = ("masked_url",)

    @admin.display(description="URL")
    def masked_url(self, obj: Delivery) -> str:
        """The planned URL with secrets masked: view-only staff see this page too."""
        return mask_secrets(obj.url)

    def has_retry_permission(self, request) -> bool:
        """Retry and cancel need the change permission, though the rows stay read-only."""
        return request.user.has_perm("postbacks.change_delivery")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Delivery) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="last error")
    def short_error(self, obj: Delivery) -> str:
        return mask_secrets(obj.last_error)[:80]

    @admin.action(description="Retry selected deliveries now", permissions=["retry"])
    def retry_now(self, request, queryset):
        count = services.deliveries_retry_now(queryset)
        skipped = queryset.count() - count
        self.message_user(
            request, ngettext("%d delivery scheduled.", "%d deliveries scheduled.", count) % count
        )
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: only failed or waiting deliveries can be retried.",
                messages.WARNING,
            )

    @admin.action(description="Cancel selected waiting deliveries", permissions=["retry"])
    def cancel(self, request, queryset):
        count = services.deliveries_cancel(queryset)
        self.message_user(
            request, ngettext("%d delivery cancelled.", "%d deliveries cancelled.", count) % count
        )


@admin.register(Attempt)
class AttemptAdmin(ClickSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The postback log: one row per HTTP request sent."""

    list_display = (
        "started_at",
        "outcome_badge",
        "status_code",
        "duration_ms",
        "delivery_link",
        "rule_name",
        "url_wrapped",
        "error_short",
    )
    list_filter = (
        "outcome",
        HttpStatusFilter,
        "delivery__rule",
        "delivery__traffic_source",
        "started_at",
    )
    list_select_related = ("delivery__rule",)
    date_hierarchy = "started_at"
    click_prefix = "delivery__click__"
    txid_lookup = "delivery__conversion__txid"
    list_per_page = 100

    @admin.display(description="rule", ordering="delivery__rule__name")
    def rule_name(self, obj: Attempt) -> str:
        return obj.delivery.rule.name if obj.delivery.rule else "(deleted rule)"

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, obj: Attempt) -> str:
        return status_badge(obj.outcome, obj.get_outcome_display())

    @admin.display(description="delivery")
    def delivery_link(self, obj: Attempt) -> str:
        url = reverse("admin:postbacks_delivery_change", args=[obj.delivery_id])
        return format_html(
            '<a href="{}">#{}&nbsp;try&nbsp;{}</a>', url, obj.delivery_id, obj.number
        )

    @admin.display(description="URL")
    def url_wrapped(self, obj: Attempt) -> str:
        url = obj.url if len(obj.url) <= 300 else obj.url[:297] + "..."
        return format_html('<span style="word-break:break-all">{}</span>', url)

    @admin.display(description="error")
    def error_short(self, obj: Attempt) -> str:
        return obj.error[:80]


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Dispatcher processes and their heartbeats: a stale one has its deliveries taken back."""

    list_display = ("name", "started_at", "heartbeat_at", "alive")

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: Worker) -> bool:
        horizon = timezone.now() - timedelta(seconds=settings.POSTBACKS_WORKER_DEAD_SECONDS)
        return obj.heartbeat_at >= horizon
