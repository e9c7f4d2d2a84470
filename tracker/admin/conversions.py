"""Conversions (trace page, manual add and correction, status changes), CSV uploads of
conversions, and rejection reasons."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import ngettext

from postbacks.models import Delivery
from tracker import currency as currencies
from tracker import ingest, macros, permissions, services, uploads
from tracker.admin.base import ClickSearchMixin
from tracker.admin.conversion_filters import ConversionTypeFilter, MethodFilter
from tracker.admin.conversion_forms import (
    EDITABLE_FIELDS,
    ConversionAddForm,
    ConversionEditForm,
    ConversionStatusForm,
)
from tracker.admin.google_ads import export_google_ads
from tracker.logadmin import compact_time, csv_cell
from tracker.models import (
    Conversion,
    ConversionStatusChange,
    ConversionUpload,
    InboundRequest,
    RejectionReason,
)
from tracker.remote import client_ip

NO_REFIRE = (
    "Corrects the recorded value only: postbacks already sent or planned keep what they "
    "carried and no rule fires again. The change is kept in History. The status has its own "
    "form below (Change status), which does fire the rules."
)
# Rows of an upload's result report per page.
REPORT_PAGE_ROWS = 200


def can_upload(user) -> bool:
    """Uploading creates conversions: both permissions are needed."""
    return user.has_perm("tracker.add_conversionupload") and user.has_perm("tracker.add_conversion")


@admin.register(Conversion)
class ConversionAdmin(ClickSearchMixin, admin.ModelAdmin):
    """Conversions; each one's page is its trace (inbound requests, status changes, dedup
    decisions, planned deliveries and every attempt) and its correction form. Added by hand
    through the same path as a postback; never deleted."""

    list_display = (
        "id",
        "received",
        "converted",
        "click",
        "txid",
        "conversion_type",
        "status_label",
        "reason",
        "payout_text",
        "currency",
        "method",
        "is_test",
    )
    list_filter = (
        "status",
        MethodFilter,
        "is_test",
        ConversionTypeFilter,
        "rejection_reason_unknown",
    )
    list_select_related = ("click",)
    show_full_result_count = False
    click_prefix = "click__"
    txid_lookup = "txid"
    change_form_template = "admin/tracker/conversion/trace.html"
    change_list_template = "admin/tracker/conversion/change_list.html"
    add_form_template = "admin/tracker/conversion/add.html"
    form = ConversionEditForm
    actions = ["change_status", export_google_ads]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "click",
                    "visit_time",
                    "converted_at",
                    "created_at",
                    "method",
                    "is_test",
                    "status",
                    "reason",
                    "status_changed_at",
                )
            },
        ),
        ("Correction", {"fields": EDITABLE_FIELDS, "description": NO_REFIRE}),
        (
            "Payout as received",
            {"fields": ("network_payout_text", "display_payout_text"), "classes": ("collapse",)},
        ),
    )

    def get_readonly_fields(self, request, obj=None):
        shown = [name for _, options in self.fieldsets for name in options["fields"]]
        return [name for name in shown if name not in EDITABLE_FIELDS]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_upload_permission(self, request) -> bool:
        return can_upload(request.user)

    def has_status_permission(self, request) -> bool:
        return request.user.has_perm("tracker.change_conversion")

    @admin.display(description="visit time")
    def visit_time(self, obj: Conversion) -> str:
        return formats.localize(timezone.localtime(obj.click.created_at))

    @admin.display(description="received", ordering="created_at")
    def received(self, obj: Conversion) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="conversion time", ordering="converted_at")
    def converted(self, obj: Conversion) -> str:
        return compact_time(obj.converted_at)

    @admin.display(description="network payout")
    def network_payout_text(self, obj: Conversion) -> str:
        return "-" if obj.network_payout is None else macros.format_value(obj.network_payout)

    @admin.display(description="display payout")
    def display_payout_text(self, obj: Conversion) -> str:
        if obj.display_payout is None:
            return "- (no exchange rate)"
        return f"{macros.format_value(obj.display_payout)} {obj.display_currency}"

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Conversion) -> str:
        colours = {"approved": "#2e7d32", "rejected": "#c62828", "refunded": "#6a1b9a"}
        return format_html(
            '<b style="color:{}">{}</b>', colours.get(obj.status, "#8a6d00"), obj.status
        )

    @admin.display(description="rejection reason", ordering="rejection_reason")
    def reason(self, obj: Conversion) -> str:
        if not obj.rejection_reason:
            return "-"
        if obj.rejection_reason_unknown:
            return format_html(
                '{} <span title="not in the list">⚠ unknown</span>', obj.rejection_reason
            )
        return obj.rejection_reason

    @admin.display(description="payout", ordering="payout")
    def payout_text(self, obj: Conversion) -> str:
        return macros.format_value(obj.payout)

    @admin.action(description="Change status of selected conversions…", permissions=["status"])
    def change_status(self, request, queryset):
        """Intermediate page: new status, reason and note; each change fires its rules."""
        form = ConversionStatusForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            changed = 0
            for conversion in queryset.select_related(
                "click__campaign", "click__offer__affiliate_network", "click__traffic_source"
            ):
                with transaction.atomic():
                    change = services.conversion_status_change(
                        conversion,
                        form.cleaned_data["status"],
                        source=ConversionStatusChange.Source.ADMIN,
                        rejection_reason=form.cleaned_data["rejection_reason"],
                        user=request.user,
                        note=form.cleaned_data["note"],
                    )
                changed += change is not None
            unchanged = queryset.count() - changed
            self.message_user(
                request,
                ngettext("%d conversion changed.", "%d conversions changed.", changed) % changed
                + (f" {unchanged} already had that status." if unchanged else ""),
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Change conversion status",
            "form": form,
            "conversions": queryset[:100],
            "count": queryset.count(),
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        }
        return TemplateResponse(request, "admin/tracker/conversion/change_status.html", context)

    def changelist_view(self, request, extra_context=None):
        extra = {"has_upload_permission": self.has_upload_permission(request)}
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def add_view(self, request, form_url="", extra_context=None):
        """Add a conversion through ``conversion_ingest`` (channel admin): refusals show on
        the field they concern; a repeat of an existing one is refused as a duplicate or
        changes its status, as a postback would."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ConversionAddForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            redirect = self._add(request, form)
            if redirect is not None:
                return redirect
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": ("click_id", "payout", "currency", "txid", "conversion_type")}),
            ("Status", {"fields": ("status", "rejection_reason")}),
            (None, {"fields": ("timestamp", "is_test")}),
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Add conversion",
            "subtitle": None,
            # The admin's helpers take any form, not only a model form as their stubs say.
            "adminform": helpers.AdminForm(form, fieldsets, {}, model_admin=self),  # type: ignore[arg-type]
            "form": form,
            "errors": helpers.AdminErrorList(form, []),  # type: ignore[arg-type]
            "opts": self.opts,
            "add": True,
            "change": False,
            "has_view_permission": self.has_view_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.add_form_template, context)

    def _add(self, request, form: ConversionAddForm) -> HttpResponseRedirect | None:
        data = form.ingest_data()
        inbound = ingest.Inbound(
            channel=InboundRequest.Channel.ADMIN,
            endpoint="admin",
            http_method="POST",
            query=urlencode(data),
            ip=client_ip(request),
            user_agent=request.headers.get("User-Agent", ""),
            user=request.user,
        )
        result = permissions.conversion_ingest_as(request.user, data, inbound)
        if not result.accepted:
            form.add_refusal(result)
            return None
        status = result.body.get("status")
        if status == "duplicate":
            what = "transaction ID" if data["txid"] else "conversion type (and no transaction ID)"
            form.add_error(
                "txid" if data["txid"] else None,
                f"Already recorded: conversion #{result.conversion_id} has this click ID and "
                f"{what}, with this status. Nothing was changed and no postback fired.",
            )
            return None
        # An accepted result has its conversion_id.
        conversion = Conversion.objects.get(pk=result.conversion_id)  # type: ignore[misc]
        if status == "status_changed":
            message = format_html(
                "Conversion #{} already had this click ID and {}: its status changed {} → {} "
                "and the rules that fire on a status change were planned.",
                conversion.pk,
                "transaction ID" if data["txid"] else "conversion type",
                result.body.get("previous_status"),
                result.body.get("new_status"),
            )
        else:
            self.log_addition(request, conversion, [{"added": {}}])
            message = format_html(
                "Conversion #{} added{}; its postbacks are planned.",
                conversion.pk,
                " as a test" if conversion.is_test else "",
            )
        self.message_user(request, message, messages.SUCCESS)
        if "_addanother" in request.POST:
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(
            reverse("admin:tracker_conversion_change", args=[conversion.pk])
        )

    def save_model(self, request, obj, form, change):
        """A correction: the display payout follows the payout, the dedup key the txid and
        type. Nothing is planned or sent (see NO_REFIRE)."""
        if change:
            if {"payout", "currency"} & set(form.changed_data):
                currencies.refresh_display_payout(obj)
            obj.dedup_key = getattr(form, "dedup_key", obj.dedup_key)
        super().save_model(request, obj, form, change)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **self.trace(object_id)}
        )

    def trace(self, object_id: str) -> dict:
        """What the trace page shows, oldest first."""
        try:
            pk = int(object_id)
        except ValueError:
            return {}
        deliveries = (
            Delivery.objects.filter(conversion_id=pk)
            .select_related("rule")
            .prefetch_related("attempts")
            .order_by("created_at", "id")
        )
        return {
            "inbound_requests": InboundRequest.objects.filter(conversion_id=pk).order_by(
                "created_at", "id"
            ),
            "status_changes": ConversionStatusChange.objects.filter(conversion_id=pk)
            .select_related("user", "inbound_request")
            .order_by("created_at", "id"),
            "deliveries": deliveries,
            "status_form": ConversionStatusForm(),
            "reasons": dict(RejectionReason.objects.values_list("code", "label")),
        }


@admin.register(RejectionReason)
class RejectionReasonAdmin(admin.ModelAdmin):
    """The rejection reasons rules can fire on; codes as the networks send them."""

    list_display = ("code", "label", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("code", "label")


# --- CSV uploads -----------------------------------------------------------------------------


class UploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="One conversion per line: click_id, payout, transaction_id, "
        "conversion_type, timestamp (optional). UTF-8; a header row is optional.",
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.TRACKER_UPLOAD_MAX_BYTES
        if upload.size > limit:
            raise ValidationError(uploads.size_error(upload.size, limit))
        return upload


def _state_badge(upload: ConversionUpload) -> str:
    colours = {"done": "#2e7d32", "failed": "#c62828", "running": "#1565c0"}
    return format_html(
        '<b style="color:{}">{}</b>',
        colours.get(upload.state, "#8a6d00"),
        upload.get_state_display(),
    )


@admin.register(ConversionUpload)
class ConversionUploadAdmin(admin.ModelAdmin):
    """CSV uploads of conversions: the upload form, each upload's progress and per-row
    results (its inbound-log rows), a CSV of the results. Uploads are never edited or
    deleted by hand (their rows are the inbound log)."""

    list_display = (
        "id",
        "file_name",
        "state_label",
        "progress",
        "accepted",
        "duplicates",
        "status_changes",
        "errors",
        "uploaded_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("state",)
    list_select_related = ("uploaded_by",)
    show_full_result_count = False
    upload_template = "admin/tracker/conversionupload/upload.html"
    progress_template = "admin/tracker/conversionupload/progress.html"

    def get_queryset(self, request):
        return super().get_queryset(request).defer("content")

    def has_add_permission(self, request) -> bool:
        return can_upload(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="state", ordering="state")
    def state_label(self, obj: ConversionUpload) -> str:
        return _state_badge(obj)

    @admin.display(description="rows done")
    def progress(self, obj: ConversionUpload) -> str:
        return f"{obj.processed_rows} / {obj.total_rows}"

    def get_urls(self):
        view = self.admin_site.admin_view
        name = "tracker_conversionupload_"
        return [
            path(
                "<path:object_id>/progress.json", view(self.progress_view), name=name + "progress"
            ),
            path(
                "<path:object_id>/results.csv", view(self.results_csv_view), name=name + "results"
            ),
            path("<path:object_id>/process/", view(self.process_view), name=name + "process"),
            *super().get_urls(),
        ]

    def _get(self, request, object_id: str) -> ConversionUpload:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request), pk=unquote(object_id))

    def add_view(self, request, form_url="", extra_context=None):
        """The upload form: the whole file is checked first (size, encoding, header, rows),
        then stored and processed by a worker; the page of the upload shows its progress."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = UploadForm(request.POST or None, request.FILES or None)
        if form.is_bound and form.is_valid():
            file = form.cleaned_data["file"]
            data = file.read(settings.TRACKER_UPLOAD_MAX_BYTES + 1)
            refusal = permissions.upload_refusal(request.user, data)
            try:
                if refusal:
                    raise uploads.UploadError(refusal)
                upload = uploads.upload_create(file.name, data, user=request.user)
            except uploads.UploadError as exc:
                form.add_error("file", str(exc))
            else:
                self.log_addition(request, upload, [{"added": {}}])
                self.message_user(
                    request,
                    f"{upload.file_name}: {upload.total_rows} rows queued for import.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:tracker_conversionupload_change", args=[upload.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Upload conversions",
            "form": form,
            "opts": self.opts,
            "max_bytes": settings.TRACKER_UPLOAD_MAX_BYTES,
            "has_view_permission": self.has_view_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.upload_template, context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Progress while queued or running, then the per-row result report (paginated)."""
        upload = self._get(request, object_id)
        rows = (
            InboundRequest.objects.filter(upload=upload)
            .order_by("row_number", "id")
            .only(
                "row_number",
                "query",
                "outcome",
                "error_code",
                "detail",
                "response_status",
                "conversion_id",
                "upload_id",
            )
        )
        paginator = Paginator(rows, REPORT_PAGE_ROWS)
        page = paginator.get_page(request.GET.get("p"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upload #{upload.pk}: {upload.file_name}",
            "subtitle": None,
            "upload": upload,
            "state_badge": _state_badge(upload),
            "page": page,
            "page_range": paginator.get_elided_page_range(page.number),
            "active": upload.state
            in (ConversionUpload.State.QUEUED, ConversionUpload.State.RUNNING),
            "can_process": upload.state != ConversionUpload.State.DONE
            and self.has_add_permission(request),
            "opts": self.opts,
            "original": upload,
            "has_view_permission": True,
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.progress_template, context)

    def progress_view(self, request, object_id):
        """The counters as JSON, polled by the progress page."""
        upload = self._get(request, object_id)
        return JsonResponse(
            {
                "state": upload.state,
                "state_label": upload.get_state_display(),
                "total_rows": upload.total_rows,
                "processed_rows": upload.processed_rows,
                "accepted": upload.accepted,
                "duplicates": upload.duplicates,
                "status_changes": upload.status_changes,
                "errors": upload.errors,
                "error": upload.error,
            }
        )

    def results_csv_view(self, request, object_id):
        """Every row's result as CSV, in file order, streamed."""
        upload = self._get(request, object_id)
        rows = (
            InboundRequest.objects.filter(upload=upload)
            .order_by("row_number", "id")
            .values_list(
                "row_number",
                "query",
                "outcome",
                "error_code",
                "detail",
                "conversion_id",
            )
        )
        outcomes = dict(InboundRequest.Outcome.choices)

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(["row", "line", "outcome", "error code", "detail", "conversion"])
            for number, (row, text, outcome, code, detail, conversion) in enumerate(
                rows.iterator(chunk_size=2000), 1
            ):
                writer.writerow(
                    [row, csv_cell(text), outcomes.get(outcome, outcome), code, csv_cell(detail),
                     conversion or ""]
                )  # fmt: skip
                if number % 1000 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="upload-{upload.pk}-results.csv"'
        return response

    def process_view(self, request, object_id):
        """POST: send the processing task again (a failed or stuck upload); rows already done
        are skipped, so nothing is imported twice."""
        upload = self._get(request, object_id)
        if request.method != "POST" or not self.has_add_permission(request):
            raise PermissionDenied
        if upload.state == ConversionUpload.State.DONE:
            self.message_user(request, "This upload is done.", messages.WARNING)
        else:
            ConversionUpload.objects.filter(
                pk=upload.pk, state=ConversionUpload.State.FAILED
            ).update(state=ConversionUpload.State.QUEUED)
            uploads.upload_enqueue(upload)
            self.message_user(
                request, "Processing again: the rows already done are skipped.", messages.SUCCESS
            )
        return HttpResponseRedirect(
            reverse("admin:tracker_conversionupload_change", args=[upload.pk])
        )
