from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.translation import ngettext

from postbacks import macros, services
from postbacks.masking import mask_secrets
from postbacks.models import Attempt, Delivery, PostbackRule, Worker
from tracker.admin import ClickSearchMixin, ReadOnlyAdminMixin
from tracker.models import Conversion


class PostbackRuleForm(forms.ModelForm):
    statuses = forms.MultipleChoiceField(
        choices=Conversion.Status.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Fire only for these conversion statuses. None ticked: any status.",
    )
    conversion_types = forms.CharField(
        required=False,
        help_text="Comma-separated conversion types (ct), e.g. lead, sale. Empty: any type.",
    )

    class Meta:
        model = PostbackRule
        fields = [
            "name",
            "event_type",
            "is_active",
            "traffic_sources",
            "campaigns",
            "offers",
            "affiliate_networks",
            "statuses",
            "conversion_types",
            "delay_seconds",
            "kind",
            "url_template",
            "timeout_seconds",
            "max_attempts",
            "retry_base_seconds",
        ]
        widgets = {"url_template": forms.Textarea(attrs={"rows": 3, "cols": 100})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["conversion_types"] = ", ".join(self.instance.conversion_types)
        # Admin renders help text as HTML: "&currency=" would show as "¤cy=".
        help_text = f"{self.fields['url_template'].help_text} {macros.help_text()}"
        self.fields["url_template"].help_text = escape(help_text)

    def clean_conversion_types(self) -> list[str]:
        raw = self.cleaned_data.get("conversion_types") or ""
        types = [t.strip() for t in raw.split(",") if t.strip()]
        too_long = [t for t in types if len(t) > 64]
        if too_long:
            raise forms.ValidationError("A conversion type has at most 64 characters.")
        return types


@admin.register(PostbackRule)
class PostbackRuleAdmin(admin.ModelAdmin):
    form = PostbackRuleForm
    list_display = ("name", "event_type", "kind", "destination_host", "delay_seconds", "is_active")
    list_filter = ("is_active", "event_type", "kind", "traffic_sources")
    search_fields = ("name", "url_template")
    autocomplete_fields = ("campaigns", "offers", "traffic_sources", "affiliate_networks")
    actions = ["activate", "deactivate"]
    fieldsets = (
        (None, {"fields": ("name", "event_type", "is_active")}),
        (
            "Scope",
            {
                "fields": ("traffic_sources", "campaigns", "offers", "affiliate_networks"),
                "description": "Leave a list empty to match all. With several lists filled, "
                "the event must match one choice in each.",
            },
        ),
        ("Firing conditions", {"fields": ("statuses", "conversion_types", "delay_seconds")}),
        ("Destination", {"fields": ("kind", "url_template", "timeout_seconds")}),
        ("Retries", {"fields": ("max_attempts", "retry_base_seconds")}),
    )

    @admin.display(description="destination")
    def destination_host(self, obj: PostbackRule) -> str:
        return obj.url_template.split("://", 1)[-1].split("/", 1)[0]

    @admin.action(description="Activate selected rules")
    def activate(self, request, queryset):
        count = queryset.update(is_active=True)
        self.message_user(
            request, ngettext("%d rule activated.", "%d rules activated.", count) % count
        )

    @admin.action(description="Deactivate selected rules")
    def deactivate(self, request, queryset):
        count = queryset.update(is_active=False)
        self.message_user(
            request, ngettext("%d rule deactivated.", "%d rules deactivated.", count) % count
        )


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
