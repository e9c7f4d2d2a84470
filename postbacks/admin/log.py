"""The delivery log in admin: deliveries, attempts and dispatcher workers.

Built for millions of rows (the healthchecks way): no COUNT(*) of the table, the heavy text
columns never read for a list, filters on indexed columns and cheap choices, search as a
union of indexed lookups, deep pages by id first. ``bench/admin_pages.py`` times each page.

- Pagination and changelist without COUNT(*) (:mod:`tracker.logadmin`, shared with the
  inbound log).
- Filters: choice fields, HTTP status class, slow attempts, rule, traffic source, offer and
  campaign (choices: the rows of those small tables that have something in the log, one
  index probe each), date ranges (``django-admin-rangefilter``).
- Search: exact click ID, external ID, txid or delivery ID, each an indexed lookup of
  delivery ids, united (:func:`delivery_ids_for`).
- CSV export of the selection (an action) or of the filtered list (a link), streamed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import ngettext
from rangefilter.filters import DateRangeFilter, DateTimeRangeFilter

from campaigns.models import TrafficSource
from postbacks import services
from postbacks.admin.log_filters import (
    CampaignFilter,
    OfferFilter,
    RuleFilter,
    SlowFilter,
    SourceFilter,
    attempt_filter,
)
from postbacks.masking import mask_secrets
from postbacks.models import Attempt, Delivery, PostbackRule, Worker
from postbacks.preview import UNSAVED_RULE_TEST
from tracker.logadmin import (
    EXPORT_MAX_ROWS,
    AdminMixinBase,
    ExportChangeList,
    HttpStatusFilter,
    LastHttpStatusFilter,
    LogChangeList,
    LogPaginator,
    ReadOnlyAdminMixin,
    compact_time,
    csv_cell,
    shorten,
    status_badge,
)

# Search: at most this many deliveries match one term.
SEARCH_LIMIT = 10_000
# Characters of a URL or an error shown in a list (the rest is never read from the database).
URL_CHARS = 120
ERROR_CHARS = 80


# --- Search --------------------------------------------------------------------------------------


def delivery_ids_for(term: str, limit: int = SEARCH_LIMIT) -> list[int]:
    """Ids of the deliveries whose click ID, external ID, txid or delivery ID is ``term``.

    One indexed lookup per kind, united (UNION): an OR across the joins would make
    PostgreSQL scan the log.
    """
    term = term.strip()
    if not term:
        return []
    deliveries = Delivery.objects.order_by()
    parts = [
        deliveries.filter(click__external_id=term),
        deliveries.filter(conversion__txid=term),
    ]
    with contextlib.suppress(ValueError):
        as_uuid = uuid.UUID(term)
        parts += [deliveries.filter(click_id=as_uuid), deliveries.filter(public_id=as_uuid)]
    first, *rest = (part.values_list("pk", flat=True) for part in parts)
    return list(first.union(*rest)[:limit])


class LogSearchMixin(AdminMixinBase):
    """Search box: exact click ID, external ID, transaction ID or delivery ID (UUID)."""

    search_fields = ("click_id",)  # shows the search box; the lookups are delivery_ids_for
    search_help_text = "Exact click ID, external ID, transaction ID (txid) or delivery ID."
    delivery_lookup = "pk"  # from the admin's model to the delivery id

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if not search_term.strip():
            return queryset, False
        ids = delivery_ids_for(search_term)
        return queryset.filter(**{f"{self.delivery_lookup}__in": ids}), False


# --- CSV -----------------------------------------------------------------------------------------


class LogAdminMixin(LogSearchMixin, ReadOnlyAdminMixin):
    """Changelist, pagination, filters, search and CSV export of a big log table.

    ``list_only`` are the fields a list page reads (``select_related`` paths included),
    ``list_annotations`` the short text prefixes it shows instead of the heavy columns;
    ``csv_columns`` the (heading, lookup) pairs of the export, ``csv_masked`` the lookups
    whose text goes through ``mask_secrets``, ``csv_names`` the lookups of ids of small
    tables (rules, sources) whose names are read once instead of joined on every row.
    """

    change_list_template = "admin/postbacks/log_change_list.html"
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_max_show_all = 0
    list_per_page = 100
    list_only: tuple[str, ...] = ()
    list_annotations: dict = {}
    csv_columns: tuple[tuple[str, str], ...] = ()
    csv_masked: frozenset[str] = frozenset()
    csv_names: dict[str, type[Model]] = {}

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ExportChangeList if getattr(request, "_log_export", False) else LogChangeList

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        if queryset.model is not self.model:  # the history page pages LogEntry rows
            return super().get_paginator(
                request, queryset, per_page, orphans, allow_empty_first_page
            )
        return LogPaginator(queryset, per_page, rows=self.list_rows)

    def list_rows(self, queryset: QuerySet) -> QuerySet:
        """What a list page reads: ``list_only`` and ``list_annotations``."""
        return queryset.only(*self.list_only).annotate(**self.list_annotations)

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        export = self.admin_site.admin_view(self.export_view)
        return [
            path("export.csv", export, name="{}_{}_export".format(*info)),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The changelist's rows (filters, search and order of the query string) as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        request._log_export = True  # type: ignore[attr-defined]  # read by get_changelist
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            info = self.opts.app_label, self.opts.model_name
            return HttpResponseRedirect(reverse("admin:{}_{}_changelist".format(*info)) + "?e=1")
        return self.csv_response(changelist.queryset)

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponseBase:
        return self.csv_response(queryset)

    def csv_response(self, queryset: QuerySet) -> StreamingHttpResponse:
        """Up to EXPORT_MAX_ROWS rows of ``queryset``, streamed; secrets masked."""
        headings = [heading for heading, _ in self.csv_columns]
        lookups = [lookup for _, lookup in self.csv_columns]
        masked = [lookup in self.csv_masked for lookup in lookups]
        names = {
            index: dict(self.csv_names[lookup]._default_manager.values_list("pk", "name"))
            for index, lookup in enumerate(lookups)
            if lookup in self.csv_names
        }
        rows = queryset.values_list(*lookups)[:EXPORT_MAX_ROWS]
        buffer = io.StringIO()
        writer = csv.writer(buffer)

        def flush() -> str:
            text = buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            return text

        seen: dict[str, str] = {}  # errors repeat: mask each text once

        def mask(value: str) -> str:
            text = seen.get(value)
            if text is None:
                text = mask_secrets(value)
                if len(seen) < 10_000:
                    seen[value] = text
            return text

        def lines() -> Iterator[str]:
            writer.writerow(headings)
            for number, row in enumerate(rows.iterator(chunk_size=2000), 1):
                if names:
                    row = list(row)
                    for index, table in names.items():
                        row[index] = table.get(row[index], row[index])
                writer.writerow(
                    [
                        csv_cell(mask(value) if masks and value else value)
                        for value, masks in zip(row, masked, strict=True)
                    ]
                )
                if number % 1000 == 0:
                    yield flush()
            yield flush()

        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="{self.opts.model_name}s-{stamp}.csv"'
        )
        return response

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Retry and cancel need the change permission, though the rows stay read-only."""
        return request.user.has_perm("postbacks.change_delivery")

    def retry_deliveries(self, request: HttpRequest, deliveries: QuerySet[Delivery]) -> None:
        """Schedule the failed or waiting ones of ``deliveries`` for an attempt now."""
        seen = 0

        def each() -> Iterable[Delivery]:
            nonlocal seen
            rows = deliveries.select_related(None).only("status", "max_attempts", "attempt_count")
            for delivery in rows.iterator(chunk_size=2000):
                seen += 1
                yield delivery

        count = services.deliveries_retry_now(each())
        self.message_user(
            request, ngettext("%d delivery scheduled.", "%d deliveries scheduled.", count) % count
        )
        if seen > count:
            self.message_user(
                request,
                f"{seen - count} skipped: only failed or waiting deliveries can be retried.",
                messages.WARNING,
            )


# --- Model admins --------------------------------------------------------------------------------


def rule_label(delivery: Delivery) -> str:
    """The delivery's rule name; "(unsaved rule)" for a test sent from a rule form before
    saving, "(deleted rule)" when its rule was deleted since."""
    if delivery.rule is not None:
        return delivery.rule.name
    if (delivery.event_detail or "").startswith(UNSAVED_RULE_TEST):
        return "(unsaved rule)"
    return "(deleted rule)"


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

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(LogAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "created",
        "status_badge",
        "rule",
        "traffic_source",
        "attempts",
        "http",
        "due",
        "external_id",
        "txid",
        "short_error",
    )
    list_filter = (
        "status",
        LastHttpStatusFilter,
        "event_type",
        RuleFilter,
        SourceFilter,
        OfferFilter,
        CampaignFilter,
        ("created_at", DateRangeFilter),
    )
    list_select_related = ("rule", "traffic_source", "click", "conversion")
    list_only = (
        "created_at",
        "status",
        "event_type",
        "attempt_count",
        "max_attempts",
        "last_status_code",
        "due_at",
        "rule__name",
        "traffic_source__name",
        "click__external_id",
        "conversion__txid",
    )
    list_annotations = {"error_head": Substr("last_error", 1, ERROR_CHARS + 1)}
    ordering = ("-created_at", "-id")
    sortable_by = ("id", "created_at")
    inlines = [AttemptInline]
    actions = ["retry_now", "cancel", "export_csv"]
    csv_columns = (
        ("delivery", "id"),
        ("delivery ID", "public_id"),
        ("created at", "created_at"),
        ("status", "status"),
        ("rule", "rule_id"),
        ("traffic source", "traffic_source_id"),
        ("type", "event_type"),
        ("click ID", "click_id"),
        ("external ID", "click__external_id"),
        ("txid", "conversion__txid"),
        ("attempts", "attempt_count"),
        ("last HTTP status", "last_status_code"),
        ("due at", "due_at"),
        ("delivered at", "delivered_at"),
        ("method", "method"),
        ("URL", "url"),
        ("last error", "last_error"),
    )
    csv_masked = frozenset({"url", "last_error"})
    csv_names = {"rule_id": PostbackRule, "traffic_source_id": TrafficSource}
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

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Delivery) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="attempts")
    def attempts(self, obj: Delivery) -> str:
        return f"{obj.attempt_count}/{obj.max_attempts}"

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Delivery) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="HTTP", ordering="last_status_code")
    def http(self, obj: Delivery) -> str:
        return "-" if obj.last_status_code is None else str(obj.last_status_code)

    @admin.display(description="due", ordering="due_at")
    def due(self, obj: Delivery) -> str:
        return compact_time(obj.due_at)

    @admin.display(description="external ID")
    def external_id(self, obj: Delivery) -> str:
        return shorten(obj.click.external_id, 40) if obj.click else ""

    @admin.display(description="txid")
    def txid(self, obj: Delivery) -> str:
        return shorten(obj.conversion.txid, 40) if obj.conversion else ""

    @admin.display(description="last error")
    def short_error(self, obj: Delivery) -> str:
        return shorten(mask_secrets(obj.error_head), ERROR_CHARS)  # type: ignore[attr-defined]

    @admin.action(description="Retry selected deliveries now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self.retry_deliveries(request, queryset)

    @admin.action(description="Cancel selected waiting deliveries", permissions=["retry"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = services.deliveries_cancel(
            queryset.select_related(None).only("pk").iterator(),
            by=f"{request.user.get_username()} (admin)",
        )
        self.message_user(
            request, ngettext("%d delivery cancelled.", "%d deliveries cancelled.", count) % count
        )


@admin.register(Attempt)
class AttemptAdmin(LogAdminMixin, admin.ModelAdmin):
    """The postback log: one row per HTTP request sent."""

    list_display = (
        "started",
        "outcome_badge",
        "status_code",
        "duration_ms",
        "delivery_link",
        "rule_name",
        "source_name",
        "external_id",
        "txid",
        "url_short",
        "error_short",
    )
    list_filter = (
        "outcome",
        HttpStatusFilter,
        SlowFilter,
        attempt_filter(RuleFilter),
        attempt_filter(SourceFilter),
        attempt_filter(OfferFilter),
        attempt_filter(CampaignFilter),
        ("started_at", DateTimeRangeFilter),
    )
    list_select_related = (
        "delivery__rule",
        "delivery__traffic_source",
        "delivery__click",
        "delivery__conversion",
    )
    list_only = (
        "started_at",
        "outcome",
        "status_code",
        "duration_ms",
        "number",
        "delivery__rule__name",
        "delivery__event_detail",
        "delivery__traffic_source__name",
        "delivery__click__external_id",
        "delivery__conversion__txid",
    )
    list_annotations = {
        "url_head": Substr("url", 1, URL_CHARS + 1),
        "error_head": Substr("error", 1, ERROR_CHARS + 1),
    }
    ordering = ("-started_at", "-id")
    sortable_by = ("started_at",)
    delivery_lookup = "delivery_id"
    actions = ["retry_now", "export_csv"]
    csv_columns = (
        ("started at", "started_at"),
        ("outcome", "outcome"),
        ("HTTP status", "status_code"),
        ("duration (ms)", "duration_ms"),
        ("delivery", "delivery_id"),
        ("attempt", "number"),
        ("rule", "delivery__rule_id"),
        ("traffic source", "delivery__traffic_source_id"),
        ("click ID", "delivery__click_id"),
        ("external ID", "delivery__click__external_id"),
        ("txid", "delivery__conversion__txid"),
        ("method", "method"),
        ("URL", "url"),
        ("error", "error"),
    )
    csv_masked = frozenset({"url", "error"})
    csv_names = {"delivery__rule_id": PostbackRule, "delivery__traffic_source_id": TrafficSource}

    @admin.display(description="rule")
    def rule_name(self, obj: Attempt) -> str:
        return rule_label(obj.delivery)

    @admin.display(description="traffic source")
    def source_name(self, obj: Attempt) -> str:
        source = obj.delivery.traffic_source
        return source.name if source else ""

    @admin.display(description="external ID")
    def external_id(self, obj: Attempt) -> str:
        click = obj.delivery.click
        return shorten(click.external_id, 40) if click else ""

    @admin.display(description="txid")
    def txid(self, obj: Attempt) -> str:
        conversion = obj.delivery.conversion
        return shorten(conversion.txid, 40) if conversion else ""

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Attempt) -> str:
        return compact_time(obj.started_at)

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
    def url_short(self, obj: Attempt) -> str:
        url = shorten(obj.url_head, URL_CHARS)  # type: ignore[attr-defined]  # list_annotations
        return format_html('<span style="word-break:break-all">{}</span>', url)

    @admin.display(description="error")
    def error_short(self, obj: Attempt) -> str:
        return shorten(obj.error_head, ERROR_CHARS)  # type: ignore[attr-defined]  # annotated

    @admin.action(description="Retry the deliveries of the selected attempts now",
                  permissions=["retry"])  # fmt: skip
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = queryset.order_by().values("delivery_id")
        self.retry_deliveries(request, Delivery.objects.filter(pk__in=ids))


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Dispatcher processes and their heartbeats: a stale one has its deliveries taken back."""

    list_display = ("name", "started_at", "heartbeat_at", "alive")

    @admin.display(boolean=True, description="alive")
    def alive(self, obj: Worker) -> bool:
        horizon = timezone.now() - timedelta(seconds=settings.POSTBACKS_WORKER_DEAD_SECONDS)
        return obj.heartbeat_at >= horizon
