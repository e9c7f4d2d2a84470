"""The conversion uploads resource of the REST API (``/api/v1/conversion-uploads/``): a CSV
file or JSON rows, processed while the client waits (small) or by a worker (202), with
per-row results."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, parsers, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from tracker import permissions, uploads
from tracker.api.base import ModelPermissions
from tracker.api.errors import DomainError, error_responses
from tracker.api.parsers import ExactJSONParser
from tracker.forms import PARAM_FIELDS
from tracker.models import ConversionUpload, InboundRequest

# A JSON upload has at most this many rows; an upload processed while the client waits
# (``wait``) at most UPLOAD_WAIT_MAX_ROWS (more are queued, answered 202).
UPLOAD_JSON_MAX_ROWS = 10_000
UPLOAD_WAIT_MAX_ROWS = 1_000
# The keys a JSON row may have: the column names a CSV file's header may use (aliases
# included) -> the ingest parameter each names.
UPLOAD_JSON_KEYS: Mapping[str, str] = uploads.COLUMN_NAMES
# The columns of the CSV file written for JSON rows, in this order (those the rows use).
UPLOAD_COLUMNS = tuple(dict.fromkeys(UPLOAD_JSON_KEYS.values()))
# The same, for messages: each column with its aliases.
UPLOAD_KEYS_TEXT = (
    "; ".join(
        " / ".join(key for key, column in UPLOAD_JSON_KEYS.items() if column == name)
        for name in UPLOAD_COLUMNS
        if name not in PARAM_FIELDS
    )
    + f"; {PARAM_FIELDS[0]}..{PARAM_FIELDS[-1]}"
)


class ConversionUploadSerializer(serializers.ModelSerializer):
    uploaded_by = serializers.CharField(
        source="uploaded_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = ConversionUpload
        fields: tuple[str, ...] = (
            "id",
            "file_name",
            "state",
            "total_rows",
            "processed_rows",
            "accepted",
            "duplicates",
            "status_changes",
            "errors",
            "error",
            "uploaded_by",
            "created_at",
            "progress_at",
            "finished_at",
        )
        read_only_fields: tuple[str, ...] = fields


@extend_schema_field(
    {
        "type": "string",
        "enum": InboundRequest.Outcome.values,
        "description": "The row's result (as the inbound log's outcome).",
    }
)
class UploadOutcomeField(serializers.CharField):
    """The row's outcome, documented inline (the inbound log names the shared choice set)."""


class UploadRowSerializer(serializers.ModelSerializer):
    """One row's result (its inbound log entry)."""

    outcome = UploadOutcomeField(read_only=True)

    conversion = serializers.IntegerField(
        source="conversion_id", read_only=True, allow_null=True, help_text="Conversion ID."
    )

    class Meta:
        model = InboundRequest
        fields = ("row_number", "outcome", "error_code", "detail", "conversion", "click_id")
        read_only_fields = fields


class UploadFileSerializer(serializers.Serializer):
    """Multipart body of ``POST /conversion-uploads/``."""

    file = serializers.FileField(
        help_text="CSV, UTF-8: click_id,payout,transaction_id,conversion_type[,timestamp]; "
        "header row optional (then also status, rejection_reason, payout_currency, "
        "param1..param20)."
    )
    wait = serializers.BooleanField(
        required=False, default=False, help_text="Process now (up to 1,000 rows)."
    )


UPLOAD_ROW_HELP = {
    "click_id": "The click ID (UUID).",
    "payout": "Decimal (string or number); default: the offer's payout rules.",
    "txid": "Transaction ID.",
    "ct": "Conversion type, e.g. sale.",
    "timestamp": "Unix seconds or ISO 8601; default: the upload time.",
    "status": "approved (default), pending, rejected, refunded (any case; aliases such as "
    "chargeback). A repeat of a conversion with another status is a status change.",
    "rejection_reason": "A code, e.g. fraud (kept for rejected).",
    "payout_currency": "ISO 4217, e.g. EUR; default: the offer's currency.",
}


class UploadJSONRowSerializer(serializers.Serializer):
    """One row: the columns of a CSV file with a header, by the same names (aliases
    included; two names of one column in a row are refused, and so is any other key).
    Values are texts or numbers; null or missing is an empty cell."""

    # Documentation only: the rows are checked by rows_csv().

    def get_fields(self) -> dict[str, serializers.Field]:
        fields: dict[str, serializers.Field] = {}
        for key, column in UPLOAD_JSON_KEYS.items():
            text = UPLOAD_ROW_HELP.get(column, "<= 1000 chars.")
            if key != column:
                text = f"Same as {column}."
            fields[key] = serializers.CharField(
                required=False, allow_blank=True, allow_null=True, help_text=text
            )
        fields["click_id"].required = True
        return fields


class UploadRowsSerializer(serializers.Serializer):
    """JSON body of ``POST /conversion-uploads/``: the rows of a CSV file with a header, as
    objects keyed by the header's column names."""

    rows = UploadJSONRowSerializer(
        many=True,
        help_text=f"1 to {UPLOAD_JSON_MAX_ROWS:,} conversions; rows[i] is row i + 2 of the "
        "upload (row 1: the header the rows are written with).",
    )
    wait = serializers.BooleanField(
        required=False, default=False, help_text="Process now (up to 1,000 rows)."
    )


class UploadQueuedSerializer(ConversionUploadSerializer):
    results = serializers.URLField(read_only=True, help_text="The per-row results (GET).")

    class Meta(ConversionUploadSerializer.Meta):
        fields = (*ConversionUploadSerializer.Meta.fields, "results")
        read_only_fields = fields


class UploadDoneSerializer(UploadQueuedSerializer):
    rows = UploadRowSerializer(many=True, read_only=True, help_text="One result per row.")

    class Meta(UploadQueuedSerializer.Meta):
        fields = (*UploadQueuedSerializer.Meta.fields, "rows")
        read_only_fields = fields


def _cell(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise serializers.ValidationError({"rows": [f"{where} must be a string or a number."]})
    text = str(value)
    if "\r" in text or "\n" in text:
        raise serializers.ValidationError({"rows": [f"{where} contains a line break."]})
    return text


def _row_cells(index: int, row: Any) -> dict[str, str]:
    """JSON row ``index`` as ``{column: text}`` (the CSV header's column names). Raises
    ValidationError naming the row and the problem."""
    if not isinstance(row, Mapping):
        raise serializers.ValidationError({"rows": [f"rows[{index}] must be an object."]})
    unknown = sorted(str(key)[:64] for key in row if key not in UPLOAD_JSON_KEYS)
    if unknown:
        raise serializers.ValidationError(
            {
                "rows": [
                    f"rows[{index}]: unknown field(s) {', '.join(unknown[:20])}; known: "
                    f"{UPLOAD_KEYS_TEXT}."
                ]
            }
        )
    cells: dict[str, str] = {}
    named: dict[str, str] = {}
    for key, value in row.items():
        column = UPLOAD_JSON_KEYS[key]
        if column in named:
            raise serializers.ValidationError(
                {"rows": [f"rows[{index}]: {named[column]} and {key} are the same column."]}
            )
        named[column] = key
        cells[column] = _cell(value, f"rows[{index}].{key}")
    if not any(cell.strip() for cell in cells.values()):
        raise serializers.ValidationError({"rows": [f"rows[{index}] is empty."]})
    return cells


def rows_csv(rows: Any) -> bytes:
    """The JSON ``rows`` as the text of a CSV file with a header naming the columns the rows
    use (``click_id`` always), so that they are read as that file would be and ``rows[i]``
    is row ``i + 2`` of the upload (row 1 is the header). Each row's keys are the header's
    column names (:data:`UPLOAD_JSON_KEYS`); a missing key is an empty cell. Raises
    ValidationError (400 ``invalid``) naming the row and the problem: not a list of 1 to
    10,000 objects, an unknown key, two keys for one column, a value not a string, number
    or null, a line break in a value, an empty row."""
    if not isinstance(rows, list) or not rows:
        raise serializers.ValidationError({"rows": ["A non-empty list of objects is required."]})
    if len(rows) > UPLOAD_JSON_MAX_ROWS:
        raise serializers.ValidationError(
            {
                "rows": [
                    f"Too many rows: {len(rows):,}, at most {UPLOAD_JSON_MAX_ROWS:,}. "
                    "Split them into several uploads."
                ]
            }
        )
    table = [_row_cells(index, row) for index, row in enumerate(rows)]
    used = {"click_id"}.union(*table)
    columns = [column for column in UPLOAD_COLUMNS if column in used]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for cells in table:
        writer.writerow([cells.get(column, "") for column in columns])
    return out.getvalue().encode()


def _wait_flag(request: Request) -> bool:
    raw = request.query_params.get("wait")
    if raw is None and hasattr(request.data, "get"):
        raw = request.data.get("wait")
    if raw is None or raw == "":
        return False
    field = serializers.BooleanField()
    try:
        return field.to_internal_value(raw)
    except serializers.ValidationError:
        raise serializers.ValidationError({"wait": ["Must be true or false."]}) from None


class ConversionUploadPermission(ModelPermissions):
    """POST needs ``add_conversionupload`` and ``add_conversion``, as the admin upload."""

    perms_map = {
        **ModelPermissions.perms_map,
        "POST": ["%(app_label)s.add_%(model_name)s", "tracker.add_conversion"],
    }


@extend_schema_view(
    list=extend_schema(responses={200: ConversionUploadSerializer, **error_responses(401, 403)}),
    retrieve=extend_schema(
        responses={200: ConversionUploadSerializer, **error_responses(401, 403, 404)}
    ),
)
class ConversionUploadViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """CSV uploads of conversions (as the admin's upload), newest first, page-number
    pagination. Counters: ``total_rows``, ``processed_rows`` and by result ``accepted``,
    ``duplicates``, ``status_changes``, ``errors``; ``state`` queued, running, done or
    failed (``error`` says why). The file's content is never returned.

    ``GET /conversion-uploads/{id}/rows/``: the per-row results, by row number.
    Needs ``tracker.view_conversionupload`` to read; ``tracker.add_conversionupload`` and
    ``tracker.add_conversion`` to upload, and ``tracker.change_conversion`` for a file with
    a row sending a status for a click that already has a conversion (else 403
    ``permission_denied`` naming the rows; nothing stored).
    """

    queryset = ConversionUpload.objects.defer("content").select_related("uploaded_by")
    serializer_class = ConversionUploadSerializer
    permission_classes = [ConversionUploadPermission]
    parser_classes = [ExactJSONParser, parsers.MultiPartParser]

    def get_queryset(self) -> Any:
        return super().get_queryset().order_by("-created_at", "-pk")

    def _results_url(self, upload: ConversionUpload) -> str:
        return self.request.build_absolute_uri(
            reverse("conversionupload-rows", kwargs={"pk": upload.pk})
        )

    @extend_schema(
        summary="Upload conversions (CSV file or JSON rows)",
        parameters=[
            OpenApiParameter(
                "wait",
                bool,
                description="true: process now and answer 201 with the results, when the "
                f"file has at most {UPLOAD_WAIT_MAX_ROWS:,} rows (else queued, 202). Also "
                "accepted in the body.",
            )
        ],
        request={
            "multipart/form-data": UploadFileSerializer,
            "application/json": UploadRowsSerializer,
        },
        responses={
            201: OpenApiResponse(
                UploadDoneSerializer, description="Processed (wait): counters and row results."
            ),
            202: OpenApiResponse(
                UploadQueuedSerializer, description="Queued: follow results for the rows."
            ),
            **error_responses(
                400,
                401,
                403,
                described={
                    400: "invalid_file (the file is refused: too large, not UTF-8 CSV, bad "
                    "header, no rows; detail says why; nothing stored), invalid (no file, "
                    f"bad rows: rows[i] and the key or value named, more than "
                    f"{UPLOAD_JSON_MAX_ROWS:,} rows, bad wait)",
                },
            ),
        },
    )
    def create(self, request: Request) -> Response:
        """Upload conversions: a multipart ``file`` (the admin's CSV format:
        ``click_id,payout,transaction_id,conversion_type[,timestamp]``, header optional), or
        a JSON body ``{"rows": [{"click_id": ..., "payout": ..., ...}, ...]}`` (at most
        10,000), each row keyed by the column names a CSV header may use (``click_id``,
        ``payout``, ``txid``, ``ct``, ``timestamp``, ``status``, ``rejection_reason``,
        ``payout_currency``, ``param1``..``param20`` and their aliases such as
        ``transaction_id`` or ``currency``; any other key is a 400 naming the row). The rows
        are stored as the CSV file with a header they make, so each gives the result that
        file's line would: ``rows[i]`` is row ``i + 2``. Each row is registered as a /cv
        postback would be (channel upload). With ``wait`` true and at most 1,000 rows the
        upload is processed before answering (201 with the counters and ``rows``);
        otherwise it is queued (202) and ``results`` gives the rows as they are done."""
        wait = _wait_flag(request)
        if request.content_type.startswith("multipart/"):
            form = request.data
            file = form.get("file") if isinstance(form, Mapping) else None
            if file is None or not hasattr(file, "read"):
                raise serializers.ValidationError({"file": ["No file was submitted."]})
            name = file.name or "upload.csv"
            data = file.read(settings.TRACKER_UPLOAD_MAX_BYTES + 1)
        else:
            if not isinstance(request.data, Mapping):
                raise serializers.ValidationError(["The body must be a JSON object."])
            unknown = sorted(str(k)[:64] for k in set(request.data) - {"rows", "wait"})
            if unknown:
                raise serializers.ValidationError({k: ["Unknown field."] for k in unknown[:20]})
            name, data = "rows.json.csv", rows_csv(request.data.get("rows"))
        refusal = permissions.upload_refusal(request.user, data)
        if refusal:
            raise DomainError(403, permissions.PERMISSION_DENIED, refusal)
        try:
            upload = uploads.upload_create(name, data, user=request.user, enqueue=False)
        except uploads.UploadError as exc:
            raise DomainError(400, "invalid_file", str(exc)) from None
        if wait and upload.total_rows <= UPLOAD_WAIT_MAX_ROWS:
            upload = uploads.upload_process(upload)
            body = dict(ConversionUploadSerializer(upload).data)
            body["results"] = self._results_url(upload)
            rows = InboundRequest.objects.filter(upload=upload).order_by("row_number", "pk")
            body["rows"] = UploadRowSerializer(rows, many=True).data
            return Response(body, status=201)
        uploads.upload_enqueue(upload)
        body = dict(ConversionUploadSerializer(upload).data)
        body["results"] = self._results_url(upload)
        return Response(body, status=202)

    @extend_schema(
        summary="An upload's per-row results",
        responses={200: UploadRowSerializer(many=True), **error_responses(401, 403, 404)},
    )
    @action(detail=True, methods=["get"])
    def rows(self, request: Request, pk: str | None = None) -> Response:
        """The rows done so far, by row number (the file's line; ``rows[i]`` of a JSON
        upload is row ``i + 2``), page-number pagination (``?page=``, ``?page_size=``)."""
        upload = self.get_object()
        rows = InboundRequest.objects.filter(upload=upload).order_by("row_number", "pk")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(UploadRowSerializer(page, many=True).data)
