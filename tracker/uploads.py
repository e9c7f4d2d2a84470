"""CSV upload of conversions (ClickFlare's "manual conversion upload"): read a file into rows,
then register each row through :func:`tracker.ingest.conversion_ingest`, like a postback.

The format, one conversion per line::

    click_id,payout,transaction_id,conversion_type,timestamp
    b39be7d3-71b8-4df1-b4b7-921995a23c1f,5.2,txid1234,sale,2025-10-02T14:30:00+02:00

Without a header the columns are positional (4 or 5 of them: the timestamp may be left out
or empty, then the upload time counts). A header row is detected (a column named
``click_id``); it may then name the columns in any order and add ``status``,
``rejection_reason``, ``payout_currency`` and ``param1``..``param20``. UTF-8 with or without
BOM, any line ending, blank lines skipped, values quoted per RFC 4180.

Flow: :func:`upload_create` reads the file (:func:`read`: whole-file problems raise
:class:`UploadError`) and stores it as a :class:`ConversionUpload`; a worker runs
:func:`upload_process` (``tracker.tasks``), which logs one :class:`InboundRequest` per row
(``row_number``), each row in its own transaction: a row is imported whole or not at all.
Processing again resumes: rows already logged are skipped, rows that met a server error
(outcome ``error``) are tried again.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from tracker import ingest, services
from tracker.forms import PARAM_FIELDS
from tracker.models import ConversionUpload, InboundRequest

logger = logging.getLogger(__name__)
Outcome = InboundRequest.Outcome
State = ConversionUpload.State

# The ClickFlare columns, in order, when the file has no header.
POSITIONAL = ("click_id", "payout", "txid", "ct", "timestamp")
POSITIONAL_TEXT = "click_id, payout, transaction_id, conversion_type[, timestamp]"
# Header names (lower case, spaces and dashes as "_") -> the ingest parameter.
COLUMN_NAMES = {
    "click_id": "click_id",
    "cf_click_id": "click_id",
    "clickid": "click_id",
    "payout": "payout",
    "revenue": "payout",
    "transaction_id": "txid",
    "txid": "txid",
    "conversion_type": "ct",
    "ct": "ct",
    "timestamp": "timestamp",
    "conversion_time": "timestamp",
    "status": "status",
    "rejection_reason": "rejection_reason",
    "payout_currency": "payout_currency",
    "currency": "payout_currency",
    **{name: name for name in PARAM_FIELDS},
}
# The inbound log's error codes of rows refused before ingest.
TOO_FEW_COLUMNS = "too_few_columns"
TOO_MANY_COLUMNS = "too_many_columns"
INVALID_CSV = "invalid_csv"
# Counters are written to the upload every this many rows (the admin's progress bar).
PROGRESS_EVERY = 50
# This many rows in a row answered by a server error (503) stop the run: the database is
# likely down. Those rows are tried again when the upload is processed again.
ERROR_STREAK = 3


class UploadError(ValueError):
    """The whole file is refused; the message says why, for the person who uploaded it."""


class UploadStopped(RuntimeError):
    """Processing cannot go on (upload deleted, database failing); the message says why."""


@dataclass(frozen=True)
class Row:
    """One record of the file.

    ``number``: the line it starts on (1 = the first line, as a spreadsheet numbers rows;
    blank lines and the header keep their numbers). ``text``: the record as in the file,
    without its line ending. ``data``: the ingest parameters (``click_id``, ``payout``,
    ``txid``, ``ct``, ``timestamp``, and the header's other columns), or None when the record
    is malformed; then ``code`` and ``error`` say why. ``click_id``: the first cell or the
    click ID column, for the log.
    """

    number: int
    text: str
    data: dict[str, str] | None
    code: str = ""
    error: str = ""
    click_id: str = ""


# --- Reading ---------------------------------------------------------------------------------


def _line_of(prefix: bytes) -> int:
    """The line number (1-based) of the byte just after ``prefix``."""
    lines = len(prefix.splitlines())
    return lines + 1 if not prefix or prefix.endswith((b"\n", b"\r")) else lines


def _size_text(size: int) -> str:
    return f"{size / 1048576:.1f} MB" if size >= 1048576 else f"{size:,} bytes"


def size_error(size: int, limit: int | None = None) -> str:
    """The message for a file of ``size`` bytes over the limit."""
    limit = settings.TRACKER_UPLOAD_MAX_BYTES if limit is None else limit
    return (
        f"The file is too large: {size:,} bytes ({_size_text(size)}), the limit is "
        f"{limit:,} bytes ({_size_text(limit)}, TRACKER_UPLOAD_MAX_BYTES). Split it into "
        "smaller files."
    )


def decode(data: bytes, *, max_bytes: int | None = None) -> str:
    """The text of an uploaded file: UTF-8, a leading BOM dropped.

    Raises :class:`UploadError` naming the problem: over ``max_bytes``
    (default ``TRACKER_UPLOAD_MAX_BYTES``), UTF-16, an Excel workbook, a NUL byte, or a byte
    that is not UTF-8 (with its value, line and position).
    """
    limit = settings.TRACKER_UPLOAD_MAX_BYTES if max_bytes is None else max_bytes
    if len(data) > limit:
        raise UploadError(size_error(len(data), limit))
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UploadError(
            'The file is UTF-16 text (Excel\'s "Unicode text"): save it as CSV UTF-8 and '
            "upload it again."
        )
    if data.startswith(b"PK\x03\x04"):
        raise UploadError(
            "This is an Excel workbook (or another ZIP file), not a CSV file: save it as "
            "CSV UTF-8 and upload it again."
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise UploadError(
            f"The file contains a NUL byte on line {_line_of(data[:nul])} (position "
            f"{nul + 1:,}): this is not a CSV text file."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadError(
            f"The file is not UTF-8 text: byte 0x{data[exc.start]:02X} on line "
            f"{_line_of(data[: exc.start])} (position {exc.start + 1:,} in the file) cannot "
            "be read. Save the file as CSV UTF-8 and upload it again; nothing was imported."
        ) from None


def _records(text: str) -> Iterator[tuple[int, str, list[str] | None, str]]:
    """(first line, raw text, cells or None, CSV error) per record of ``text``."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    reader = csv.reader(lines())
    start = 1
    while True:
        try:
            cells, error = next(reader), ""
        except StopIteration:
            return
        except csv.Error as exc:
            cells, error = None, f"Unreadable CSV: {exc}."
        raw = "".join(consumed)
        consumed.clear()
        yield start, raw.rstrip("\r\n"), cells, error
        start = reader.line_num + 1


def _column_name(cell: str) -> str:
    return re.sub(r"[\s\-]+", "_", cell.strip().lstrip("\ufeff").lower())


def _header(number: int, cells: list[str]) -> tuple[str, ...] | None:
    """The ingest names of a header row's columns ("" for an unnamed one), None when the
    record is not a header: no cell names the click ID column, or a cell holds a click ID
    (a data row whose parameter happens to read "clickid"). Raises UploadError for unknown
    or repeated columns."""
    names = [_column_name(cell) for cell in cells]
    if not any(COLUMN_NAMES.get(name) == "click_id" for name in names):
        return None
    if any(_is_click_id(cell) for cell in cells):
        return None
    unknown = [
        cell.strip()
        for cell, name in zip(cells, names, strict=True)
        if name and name not in COLUMN_NAMES
    ]
    if unknown:
        raise UploadError(
            f"Line {number}: unknown column{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(u[:40]) for u in unknown[:5])} in the header. Known columns: "
            "click_id, payout, transaction_id (txid), conversion_type (ct), timestamp, "
            "status, rejection_reason, payout_currency, param1..param20."
        )
    columns = tuple(COLUMN_NAMES.get(name, "") for name in names)
    repeated = sorted({c for c in columns if c and columns.count(c) > 1})
    if repeated:
        raise UploadError(f"Line {number}: column {repeated[0]} appears twice in the header.")
    return columns


def _is_click_id(cell: str) -> bool:
    """Whether ``cell`` is a click ID (a UUID, as the tracker gives them)."""
    try:
        uuid.UUID(cell.strip())
    except ValueError:
        return False
    return True


def _row(number: int, raw: str, cells: list[str], header: tuple[str, ...] | None) -> Row:
    columns = header or POSITIONAL
    click_id = cells[columns.index("click_id")] if len(cells) > columns.index("click_id") else ""
    click_id = click_id.strip()[:64]
    while len(cells) > len(columns) and not cells[-1].strip():
        cells = cells[:-1]  # empty cells a spreadsheet added at the end
    expected = f"{len(columns)} as in the header" if header else f"4 or 5: {POSITIONAL_TEXT}"
    least = len(columns) if header else len(POSITIONAL) - 1
    if len(cells) < least:
        error = f"Too few columns: {len(cells)}, expected {expected}."
        return Row(number, raw, None, TOO_FEW_COLUMNS, error, click_id)
    if len(cells) > len(columns):
        error = (
            f"Too many columns: {len(cells)}, expected {expected}. A value with a comma "
            'must be quoted, e.g. "12,50".'
        )
        return Row(number, raw, None, TOO_MANY_COLUMNS, error, click_id)
    data = {name: cell.strip() for name, cell in zip(columns, cells, strict=False) if name}
    return Row(number, raw, data, click_id=click_id)


def iter_rows(text: str) -> Iterator[Row]:
    """The rows of a file's text, one :class:`Row` per non-blank record, lazily.

    The first non-blank record is the header when a column is named ``click_id`` (or
    ``cf_click_id``); its names map the columns. Malformed records (too few or too many
    columns, unreadable CSV) are rows with ``data`` None. Raises :class:`UploadError` only
    for a header with unknown or repeated columns, before yielding any row.
    """
    header: tuple[str, ...] | None = None
    first = True
    for number, raw, cells, error in _records(text):
        if cells is None:
            first = False
            yield Row(number, raw, None, INVALID_CSV, error)
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if first:
            first = False
            header = _header(number, cells)
            if header is not None:
                continue
        yield _row(number, raw, cells, header)


def parse(text: str) -> list[Row]:
    """All rows of ``text`` (see :func:`iter_rows`); raises :class:`UploadError` only for a
    bad header."""
    return list(iter_rows(text))


def read(data: bytes, *, max_bytes: int | None = None) -> tuple[str, int]:
    """``(text, number of rows)`` of an uploaded file, checked whole before anything is
    imported. Raises :class:`UploadError`: too large, not UTF-8 text (see :func:`decode`),
    bad header, or no row at all."""
    text = decode(data, max_bytes=max_bytes)
    count = sum(1 for _ in iter_rows(text))
    if not count:
        raise UploadError("The file has no conversion rows (it is empty or only a header).")
    return text, count


# --- Processing -----------------------------------------------------------------------------


@dataclass
class Progress:
    """Rows done so far, by result, as the upload's counters."""

    processed_rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    status_changes: int = 0
    errors: int = 0

    def add(self, outcome: str, count: int = 1) -> None:
        self.processed_rows += count
        names: dict[str, str] = {
            Outcome.ACCEPTED: "accepted",
            Outcome.DUPLICATE: "duplicates",
            Outcome.STATUS_CHANGED: "status_changes",
        }
        name = names.get(outcome, "errors")
        setattr(self, name, getattr(self, name) + count)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def of(cls, upload: ConversionUpload) -> Progress:
        """The counters from the rows logged for ``upload`` (one aggregate)."""
        progress = cls()
        counts = (
            InboundRequest.objects.filter(upload=upload)
            .order_by()
            .values_list("outcome")
            .annotate(count=Count("id"))
        )
        for outcome, count in counts:
            progress.add(outcome, count)
        return progress


def upload_create(
    file_name: str, data: bytes, *, user: Any = None, enqueue: bool = True
) -> ConversionUpload:
    """Check a file (:func:`read`) and store it as a queued upload; with ``enqueue``, its
    processing task is sent once the transaction commits. Raises :class:`UploadError`
    when the file is refused (nothing is stored)."""
    text, count = read(data)
    with transaction.atomic():
        upload = ConversionUpload.objects.create(
            file_name=services.storable(file_name.strip())[:255] or "upload.csv",
            content=text,
            total_rows=count,
            uploaded_by=user if getattr(user, "pk", None) else None,
        )
        if enqueue:
            upload_enqueue(upload)
    return upload


class _ProcessTask(Protocol):
    def delay(self, upload_id: int) -> object: ...


_process_task: _ProcessTask | None = None


def use_process_task(task: _ProcessTask) -> None:
    """Set the Celery task :func:`upload_enqueue` sends (``tracker.apps`` passes
    ``tracker.tasks.upload_process_task``): the tasks import this module, not the reverse."""
    global _process_task
    _process_task = task


def upload_enqueue(upload: ConversionUpload) -> None:
    """Send the processing task of ``upload`` once the current transaction commits. A
    broker failure is logged, not raised: the upload stays queued and can be processed
    again from its admin page (or ``manage.py conversions_upload --resume``).

    Raises RuntimeError when no task was set (:func:`use_process_task`; the app's
    ``ready()`` sets it)."""
    task = _process_task
    if task is None:
        raise RuntimeError("No upload task: tracker.apps sets it in ready().")
    upload_id = upload.pk
    transaction.on_commit(lambda: task.delay(upload_id), robust=True)


def upload_process(
    upload: ConversionUpload,
    *,
    max_seconds: float | None = None,
    on_row: Callable[[Row, InboundRequest], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> ConversionUpload:
    """Register the rows of ``upload`` not yet done; returns it refreshed.

    Each row goes through :func:`~tracker.ingest.conversion_ingest` (channel upload, the
    upload time as the default conversion time) in its own transaction with its log row
    (:func:`row_process`). Rows already logged for this upload are skipped, except those
    answered by a server error, which are tried again: processing again resumes, and two
    processes on the same upload take turns row by row, never importing a row twice.
    Counters are written every ``progress_every`` rows; ``on_row(row, log)`` is called
    after each row. With ``max_seconds``, stops after that long with the state still
    ``running`` (the caller goes on later). Ends ``done``; or ``failed`` with the reason and
    the number of rows done when processing cannot go on (never raises for that). An upload
    already done is returned unchanged.
    """
    claimed = (
        ConversionUpload.objects.filter(pk=upload.pk)
        .exclude(state=State.DONE)
        .update(state=State.RUNNING, error="", finished_at=None, progress_at=timezone.now())
    )
    upload.refresh_from_db()
    if not claimed:
        return upload
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    done: set[int | None] = set()
    first_rows: dict[int, int] = {}  # conversion id -> the first row of this file that had it
    progress = Progress()
    logged = (
        InboundRequest.objects.filter(upload=upload)
        .order_by("row_number")
        .values_list("row_number", "outcome", "conversion_id")
    )
    for number, outcome, conversion_id in logged.iterator(chunk_size=5000):
        if outcome == Outcome.ERROR:
            continue
        done.add(number)
        progress.add(outcome)
        if conversion_id is not None and number is not None:  # an upload's rows have numbers
            first_rows.setdefault(conversion_id, number)
    row: Row | None = None
    streak = 0
    try:
        for row in iter_rows(upload.content):
            if row.number in done:
                continue
            log = row_process(upload, row, first_rows)
            progress.add(log.outcome)
            streak = streak + 1 if log.outcome == Outcome.ERROR else 0
            if on_row is not None:
                on_row(row, log)
            if streak >= ERROR_STREAK:
                raise UploadStopped(
                    f"{streak} rows in a row could not be recorded (server error, last: "
                    f"{log.detail})"
                )
            if progress.processed_rows % progress_every == 0:
                _save_progress(upload, progress)
            if deadline is not None and time.monotonic() > deadline:
                _save_progress(upload, progress)
                upload.refresh_from_db()
                return upload
    except Exception as exc:
        logger.exception("Upload %s stopped at row %s.", upload.pk, row and row.number)
        where = f" at row {row.number}" if row is not None else ""
        reason = str(exc) if isinstance(exc, UploadError | UploadStopped) else repr(exc)
        return _finish(upload, State.FAILED, f"Stopped{where}: {reason}")
    return _finish(upload, State.DONE, "")


def row_process(
    upload: ConversionUpload, row: Row, first_rows: dict[int, int] | None = None
) -> InboundRequest:
    """Register one row of ``upload`` and log it, in one transaction; returns its log row.

    The upload row is locked first and the row's log looked up: a row another process
    already did is returned as it was; one that met a server error is done again (its old
    log row replaced). ``first_rows`` maps conversion ids to the first row that had them
    (updated here), so that a repeat says "duplicate of row N". Raises UploadStopped when
    the upload was deleted or the result could not be logged.
    """
    first_rows = {} if first_rows is None else first_rows
    with transaction.atomic():
        if not ConversionUpload.objects.select_for_update().filter(pk=upload.pk).exists():
            raise UploadStopped("The upload was deleted.")
        before = InboundRequest.objects.filter(upload=upload, row_number=row.number)
        previous = before.order_by("-id").first()
        if previous is not None and previous.outcome != Outcome.ERROR:
            return previous
        if previous is not None:
            before.delete()
        inbound = ingest.Inbound(
            channel=InboundRequest.Channel.UPLOAD,
            endpoint="upload",
            http_method="CSV",
            query=row.text,
            upload=upload,
            row_number=row.number,
            user=upload.uploaded_by,
            received_at=upload.created_at,
        )
        if row.data is None:
            refusal = ingest.error_result(400, row.code, row.error)
            result = ingest.record(inbound, refusal, click_id=row.click_id, strict=True)
        else:
            result = ingest.conversion_ingest(row.data, inbound)
        log = result.log
        if log is None:
            raise UploadStopped(f"Row {row.number} could not be logged: {result.body}")
        note = result_note(row, result, first_rows)
        if note:
            log.detail = note
            InboundRequest.objects.filter(pk=log.pk).update(detail=note)
    if result.conversion_id is not None:
        first_rows.setdefault(result.conversion_id, row.number)
    return log


def result_note(row: Row, result: ingest.Result, first_rows: dict[int, int]) -> str:
    """What a duplicate or a status change means for this row, in words; "" otherwise
    (the outcome and the refusal's detail say it)."""
    status = result.body.get("status")
    if status not in ("duplicate", "status_changed") or row.data is None:
        return ""
    data = row.data
    same = (
        f"transaction ID {data['txid']}"
        if data.get("txid")
        else f"conversion type {data.get('ct') or '(none)'}"
    )
    earlier = first_rows.get(result.conversion_id) if result.conversion_id is not None else None
    if status == "duplicate":
        where = (
            f"Duplicate of row {earlier}"
            if earlier
            else f"Already recorded as conversion #{result.conversion_id}"
        )
        return f"{where}: same click ID and {same}. Nothing changed, no postback fired."
    change = f"{result.body.get('previous_status')} → {result.body.get('new_status')}"
    where = f"as row {earlier}" if earlier else f"as conversion #{result.conversion_id}"
    note = f"Status changed {change}: same click ID and {same} {where}"
    ct = data.get("ct", "")
    if not data.get("status") and ct.lower() in ingest.REFUND_TYPES:
        note += f"; conversion type {ct} without a status means refunded"
    note += "."
    payout = _decimal(data.get("payout", ""))
    if payout is not None:
        note += (
            f" The payout {data['payout']} of this row is not recorded: a status change "
            "keeps the conversion's payout."
        )
    return note


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text) if text else None
    except InvalidOperation:
        return None


def _save_progress(upload: ConversionUpload, progress: Progress) -> None:
    ConversionUpload.objects.filter(pk=upload.pk).update(
        progress_at=timezone.now(), **progress.as_dict()
    )


def _finish(upload: ConversionUpload, state: str, error: str) -> ConversionUpload:
    """End a run: counters recounted from the log (exact whatever ran before), the state,
    and for a failure the reason with how many rows were done."""
    progress = Progress.of(upload)
    if state == State.FAILED:
        retry = InboundRequest.objects.filter(upload=upload, outcome=Outcome.ERROR).count()
        error = (
            f"{error}. {progress.processed_rows - retry} of {upload.total_rows} rows were "
            "done; process the upload again to resume (rows done are skipped"
            + (f", the {retry} that met a server error are tried again)." if retry else ").")
        )
    now = timezone.now()
    ConversionUpload.objects.filter(pk=upload.pk).update(
        state=state, error=error, finished_at=now, progress_at=now, **progress.as_dict()
    )
    upload.refresh_from_db()
    return upload


def uploads_stalled(older_than: float) -> list[int]:
    """Ids of the uploads queued or running whose processing has written nothing for
    ``older_than`` seconds (never started: counted from the upload time), oldest first: a
    task lost with the broker or a worker killed mid-run. Processing them again is safe
    (see :func:`upload_process`)."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    stalled = ConversionUpload.objects.filter(state__in=[State.QUEUED, State.RUNNING]).filter(
        Q(progress_at__lt=cutoff) | Q(progress_at__isnull=True, created_at__lt=cutoff)
    )
    return list(stalled.order_by("pk").values_list("pk", flat=True))


def uploads_stalled_take(older_than: float) -> list[int]:
    """:func:`uploads_stalled`, each one taken by a conditional UPDATE of its progress time
    (it counts as progress: the upload is sent again now). Two callers at once (two beats)
    share the stalled uploads rather than both send each one; an upload sent again and lost
    once more is stalled again ``older_than`` seconds later."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    still_stalled = Q(progress_at__lt=cutoff) | Q(progress_at__isnull=True, created_at__lt=cutoff)
    taken = []
    for upload_id in uploads_stalled(older_than):
        if (
            ConversionUpload.objects.filter(still_stalled, pk=upload_id)
            .filter(state__in=[State.QUEUED, State.RUNNING])
            .update(progress_at=timezone.now())
        ):
            taken.append(upload_id)
    return taken


def result_text(log: InboundRequest) -> str:
    """One line for a row's result, as the management command prints it."""
    text = log.get_outcome_display()
    if log.error_code:
        text += f" ({log.error_code})"
    if log.conversion_id:
        text += f", conversion #{log.conversion_id}"
    return f"{text}: {log.detail}" if log.detail else text
