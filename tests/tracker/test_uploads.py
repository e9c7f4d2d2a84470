"""CSV upload of conversions (tracker.uploads): reading, per-row results, resume (any database)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbacks.models import Delivery
from tests import factories
from tests.conftest import examples
from tracker import services, tasks, uploads
from tracker.models import (
    Click,
    Conversion,
    ConversionStatusChange,
    ConversionUpload,
    InboundRequest,
)

pytestmark = pytest.mark.django_db
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "manual_upload.csv"
URL = "https://ts.example/pb?cid={externalid}&tx={txid}&s={status}"


@pytest.fixture
def click():
    """A click from before the fixture's timestamps (a conversion may not precede it)."""
    created = factories.click(external_id="ext-up")
    Click.objects.filter(pk=created.pk).update(created_at=datetime(2025, 10, 1, tzinfo=UTC))
    created.refresh_from_db()
    return created


@pytest.fixture
def user():
    return get_user_model().objects.create_user("uploader", password="x")


def fixture_bytes(click) -> bytes:
    return FIXTURE.read_bytes().replace(b"CLICK_ID_FROM_DEMO", str(click.pk).encode())


def run(data: bytes, user=None) -> ConversionUpload:
    upload = uploads.upload_create("conversions.csv", data, user=user, enqueue=False)
    return uploads.upload_process(upload)


def results(upload: ConversionUpload) -> list[tuple[int, str, str]]:
    rows = InboundRequest.objects.filter(upload=upload).order_by("row_number")
    return list(rows.values_list("row_number", "outcome", "error_code"))


def log_row(upload: ConversionUpload, number: int) -> InboundRequest:
    return InboundRequest.objects.get(upload=upload, row_number=number)


# --- The ClickFlare fixture ---------------------------------------------------------------------


def test_fixture_gives_one_clear_result_per_row(click, user):
    rule = factories.rule(URL)
    upload = run(fixture_bytes(click), user)

    assert results(upload) == [
        (1, "unknown_click", "unknown_click_id"),
        (2, "accepted", ""),
        (3, "accepted", ""),
        (4, "invalid", "invalid_click_id"),
        (5, "invalid", "invalid_payout"),
        (6, "status_changed", ""),
    ]
    assert (upload.state, upload.total_rows, upload.processed_rows) == ("done", 6, 6)
    assert (upload.accepted, upload.duplicates, upload.status_changes, upload.errors) == (
        2,
        0,
        1,
        3,
    )
    assert upload.finished_at is not None and upload.error == ""

    lead = Conversion.objects.get(txid="ord-7781")
    upsell = Conversion.objects.get(txid="ord-7781-up1")
    assert (lead.status, str(lead.payout), lead.method) == ("refunded", "12.500000", "upload")
    assert lead.converted_at == upload.created_at  # no timestamp: the upload time
    assert upsell.converted_at == datetime(2025, 10, 3, 9, 15, tzinfo=UTC)
    assert (upsell.conversion_type, upsell.method) == ("upsell", "upload")
    assert log_row(upload, 2).conversion == lead and log_row(upload, 3).conversion == upsell

    refund = log_row(upload, 6)
    assert refund.conversion == lead
    assert refund.query == f"{click.pk},-12.50,ord-7781,refund,"
    for expected in (
        "Status changed approved → refunded",
        "same click ID and transaction ID ord-7781 as row 2",
        "conversion type refund without a status means refunded",
        "The payout -12.50 of this row is not recorded",
    ):
        assert expected in refund.detail, refund.detail
    change = ConversionStatusChange.objects.get(conversion=lead)
    assert (change.source, change.user, change.inbound_request) == ("upload", user, refund)

    assert "b39be7d3-71b8-4df1-b4b7-921995a23c1f" in log_row(upload, 1).detail
    assert log_row(upload, 5).detail.startswith("payout:")
    assert {r.channel for r in InboundRequest.objects.filter(upload=upload)} == {"upload"}
    # Created lead, created upsell, status change to refunded: three planned postbacks.
    fired = Delivery.objects.filter(rule=rule).order_by("id")
    assert [d.url.rsplit("&", 2)[1:] for d in fired] == [
        ["tx=ord-7781", "s=approved"],
        ["tx=ord-7781-up1", "s=approved"],
        ["tx=ord-7781", "s=refunded"],
    ]


def test_management_command_prints_one_result_per_row_and_totals(click, user, tmp_path):
    path = tmp_path / "manual_upload.csv"
    path.write_bytes(fixture_bytes(click))
    out = StringIO()
    call_command("conversions_upload", str(path), "--user", "uploader", stdout=out)
    text = out.getvalue()
    assert "row 1: Unknown click ID (unknown_click_id): No click with ID" in text
    assert re.search(r"row 2: Accepted, conversion #\d+\n", text)
    assert "row 5: Invalid (invalid_payout): payout:" in text
    assert "row 6: Status changed, conversion #" in text
    assert "6 of 6 rows: 2 accepted, 0 duplicates, 1 status changes, 3 errors." in text
    assert ConversionUpload.objects.get().uploaded_by == user


def test_management_command_refuses_a_bad_file_and_an_unknown_user(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"caf\xe9,1,t,sale\n")
    with pytest.raises(CommandError, match="not UTF-8"):
        call_command("conversions_upload", str(path), stdout=StringIO())
    with pytest.raises(CommandError, match="No user named"):
        call_command("conversions_upload", str(path), "--user", "nobody", stdout=StringIO())
    assert not ConversionUpload.objects.exists()


# --- Reading a file -----------------------------------------------------------------------------


def test_bom_crlf_and_header(click):
    data = (
        "\ufeffclick_id,payout,transaction_id,conversion_type,timestamp\r\n"
        f"{click.pk},2.5,T-1,sale,2025-10-02T14:30:00+02:00\r\n"
        "\r\n"
        f"{click.pk},1,T-2,lead,\r\n"
    ).encode()
    upload = run(data)
    assert results(upload) == [(2, "accepted", ""), (4, "accepted", "")]
    first = Conversion.objects.get(txid="T-1")
    assert first.converted_at == datetime(2025, 10, 2, 12, 30, tzinfo=UTC)
    assert upload.total_rows == 2


def test_a_header_maps_columns_by_name_and_adds_status(click):
    data = (
        f"Transaction ID,Status,Click ID,Payout,param1\n"
        f"T-9,pending,{click.pk},4,a@b.example\n"
        f"T-9,approved,{click.pk},4,\n"
    ).encode()
    upload = run(data)
    assert results(upload) == [(2, "accepted", ""), (3, "status_changed", "")]
    conversion = Conversion.objects.get()
    assert (conversion.status, conversion.params) == ("approved", {"param1": "a@b.example"})
    assert "Status changed pending → approved" in log_row(upload, 3).detail


def test_a_header_with_an_unknown_column_refuses_the_file(click):
    with pytest.raises(uploads.UploadError, match="Line 1: unknown column 'revenue_eur'"):
        uploads.upload_create("x.csv", b"click_id,revenue_eur\nabc,1\n", enqueue=False)
    with pytest.raises(uploads.UploadError, match="column txid appears twice"):
        uploads.read(b"click_id,txid,transaction_id\n")
    assert not ConversionUpload.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"abc,1,t,sale\ncaf\xe9,1,t2,sale\n", r"byte 0xE9 on line 2 \(position 17 in the file\)"),
        (b"\xff\xfea\x00b\x00", "UTF-16"),
        (b"PK\x03\x04rest", "Excel workbook"),
        (b"abc,1,t,sale\nx\x00y,1,t,sale\n", "NUL byte on line 2"),
        (b"", "no conversion rows"),
        (b"\r\n\n  \n,,,,\n", "no conversion rows"),
        (b"click_id,payout,transaction_id,conversion_type,timestamp\r\n", "no conversion rows"),
    ],
)
def test_unreadable_files_are_refused_whole(data, message):
    with pytest.raises(uploads.UploadError, match=message):
        uploads.upload_create("x.csv", data, enqueue=False)
    assert not ConversionUpload.objects.exists()


def test_oversize_file_is_refused_with_the_limit(settings):
    settings.TRACKER_UPLOAD_MAX_BYTES = 100
    with pytest.raises(uploads.UploadError, match=r"too large: 101 bytes .* limit is 100 bytes"):
        uploads.read(b"x" * 101)
    assert uploads.read(b"a,1,t,sale" + b" " * 90) == ("a,1,t,sale" + " " * 90, 1)


def test_rows_with_too_few_or_too_many_columns_are_refused_alone(click):
    data = (
        f"{click.pk},1\n"
        f"{click.pk},12,50,T-1,sale,2025-10-02\n"
        f"{click.pk},1,T-2,sale,,,\n"  # empty cells a spreadsheet added: fine
        f"{click.pk},1,T-3,sale\n"  # no timestamp column at all: fine
    ).encode()
    upload = run(data)
    assert results(upload) == [
        (1, "invalid", "too_few_columns"),
        (2, "invalid", "too_many_columns"),
        (3, "accepted", ""),
        (4, "accepted", ""),
    ]
    assert "Too few columns: 2, expected 4 or 5" in log_row(upload, 1).detail
    assert 'must be quoted, e.g. "12,50"' in log_row(upload, 2).detail
    assert log_row(upload, 1).click_id == str(click.pk)
    assert upload.errors == 2


def test_quoted_values_and_line_numbers_of_multiline_records(click):
    data = (
        f'"{click.pk}"," 1.5 ",T-1,"sale, quoted"\n'
        f'{click.pk},2,"T-\r\n2",lead\n'
        f"{click.pk},3,T-3,x\n"
    )
    upload = run(data.encode())
    assert results(upload) == [(1, "accepted", ""), (2, "accepted", ""), (4, "accepted", "")]
    first = Conversion.objects.get(txid="T-1")
    assert (str(first.payout), first.conversion_type) == ("1.500000", "sale, quoted")
    assert Conversion.objects.filter(txid="T-\r\n2").exists()
    assert log_row(upload, 2).query == f'{click.pk},2,"T-\r\n2",lead'


def test_duplicates_inside_the_file_point_to_the_first_row(click):
    rule = factories.rule(URL)
    data = (
        f"{click.pk},5,D-1,sale,\n"
        f"{click.pk},5,D-1,sale,\n"
        f"{click.pk},5,,lead,\n"
        f"{click.pk},5,,lead,\n"
    ).encode()
    upload = run(data)
    assert results(upload) == [
        (1, "accepted", ""),
        (2, "duplicate", ""),
        (3, "accepted", ""),
        (4, "duplicate", ""),
    ]
    assert log_row(upload, 2).detail == (
        "Duplicate of row 1: same click ID and transaction ID D-1. Nothing changed, no "
        "postback fired."
    )
    assert log_row(upload, 4).detail.startswith("Duplicate of row 3: same click ID and conversion")
    assert (upload.accepted, upload.duplicates) == (2, 2)
    assert Conversion.objects.count() == 2
    assert Delivery.objects.filter(rule=rule).count() == 2
    # Uploaded again: already recorded, said so.
    again = run(data)
    assert [outcome for _, outcome, _ in results(again)] == ["duplicate"] * 4
    first = Conversion.objects.get(txid="D-1")
    assert log_row(again, 1).detail.startswith(f"Already recorded as conversion #{first.pk}")
    assert log_row(again, 2).detail.startswith("Duplicate of row 1")


# --- One row, all or nothing; resuming ----------------------------------------------------------


def failing_on(monkeypatch, txids: set[str]) -> None:
    """Make planning the postbacks of conversions with these txids fail like the database."""
    plan = services.deliveries_plan

    def deliveries_plan(**kwargs):
        conversion = kwargs.get("conversion")
        if conversion is not None and conversion.txid in txids:
            raise DatabaseError("forced failure")
        return plan(**kwargs)

    monkeypatch.setattr(services, "deliveries_plan", deliveries_plan)


def test_a_row_failing_in_the_database_leaves_nothing_and_the_others_go_on(click, monkeypatch):
    rule = factories.rule(URL)
    failing_on(monkeypatch, {"boom"})
    data = f"{click.pk},1,A,sale,\n{click.pk},1,boom,sale,\n{click.pk},1,C,sale,\n".encode()
    upload = run(data)
    assert results(upload) == [
        (1, "accepted", ""),
        (2, "error", "unavailable"),
        (3, "accepted", ""),
    ]
    # The failing row's conversion was inserted before the failure: rolled back with it.
    assert set(Conversion.objects.values_list("txid", flat=True)) == {"A", "C"}
    assert Delivery.objects.filter(rule=rule).count() == 2
    assert upload.state == "done" and upload.errors == 1


def test_a_failing_run_stops_and_processing_again_resumes_without_double_import(click, monkeypatch):
    factories.rule(URL)
    failing_on(monkeypatch, {"b1", "b2", "b3"})
    lines = [f"{click.pk},1,{txid},sale," for txid in ("a", "b1", "b2", "b3", "c")]
    upload = run("\n".join(lines).encode())
    assert upload.state == "failed"
    assert upload.error.startswith("Stopped at row 4: 3 rows in a row could not be recorded")
    assert "1 of 5 rows were done" in upload.error
    assert "the 3 that met a server error are tried again" in upload.error
    assert [o for _, o, _ in results(upload)] == ["accepted", "error", "error", "error"]

    monkeypatch.undo()  # the database is back
    upload = uploads.upload_process(upload)
    assert upload.state == "done" and upload.error == ""
    assert [o for _, o, _ in results(upload)] == ["accepted"] * 5  # one log row per row
    assert Conversion.objects.count() == 5
    assert Delivery.objects.count() == 5
    assert (upload.processed_rows, upload.accepted, upload.errors) == (5, 5, 0)


def test_a_crash_half_way_is_reported_and_the_rerun_skips_the_rows_done(click):
    lines = [f"{click.pk},1,R{n},sale," for n in range(1, 6)]
    upload = uploads.upload_create("big.csv", "\n".join(lines).encode(), enqueue=False)

    def crash(row, log):
        if row.number == 2:
            raise RuntimeError("worker lost")

    upload = uploads.upload_process(upload, on_row=crash)
    assert upload.state == "failed"
    assert "Stopped at row 2: RuntimeError('worker lost')" in upload.error
    assert "2 of 5 rows were done" in upload.error
    assert upload.processed_rows == 2

    seen = []
    upload = uploads.upload_process(upload, on_row=lambda row, log: seen.append(row.number))
    assert seen == [3, 4, 5]
    assert upload.state == "done" and upload.processed_rows == 5
    assert InboundRequest.objects.filter(upload=upload).count() == 5
    assert Conversion.objects.count() == 5
    # Done: processing again changes nothing.
    assert uploads.upload_process(upload, on_row=seen.append).state == "done"
    assert seen == [3, 4, 5]


def test_a_row_another_process_did_is_not_done_twice(click):
    upload = uploads.upload_create("x.csv", f"{click.pk},1,T,sale\n".encode(), enqueue=False)
    (row,) = uploads.parse(upload.content)
    first = uploads.row_process(upload, row)
    second = uploads.row_process(upload, row)
    assert first.pk == second.pk
    assert InboundRequest.objects.filter(upload=upload).count() == 1
    assert Conversion.objects.count() == 1


def test_the_task_resumes_in_a_new_task_when_its_time_is_up(click, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks, "UPLOAD_TASK_SECONDS", 0)
    monkeypatch.setattr(tasks.upload_process_task, "delay", sent.append)
    lines = [f"{click.pk},1,T{n},sale," for n in range(3)]
    upload = uploads.upload_create("x.csv", "\n".join(lines).encode(), enqueue=False)
    tasks.upload_process_task(upload.pk)
    upload.refresh_from_db()
    assert (upload.state, upload.processed_rows, sent) == ("running", 1, [upload.pk])
    monkeypatch.setattr(tasks, "UPLOAD_TASK_SECONDS", 60)
    tasks.upload_process_task(upload.pk)
    upload.refresh_from_db()
    assert (upload.state, upload.processed_rows, upload.accepted) == ("done", 3, 3)
    tasks.upload_process_task(upload.pk)  # a repeated message: nothing to do
    assert InboundRequest.objects.filter(upload=upload).count() == 3


def test_upload_create_enqueues_on_commit(click, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.upload_process_task, "delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        upload = uploads.upload_create("x.csv", f"{click.pk},1,T,sale\n".encode())
    assert len(callbacks) == 1 and sent == [upload.pk]
    assert (upload.state, upload.total_rows, upload.file_name) == ("queued", 1, "x.csv")


def test_stalled_uploads_are_sent_again_and_live_or_finished_ones_are_not(
    click, monkeypatch, settings
):
    """Queued with a lost task, running with a killed worker: sent again by the beat task.
    Just queued, running with recent progress, done or failed: left alone."""
    settings.TRACKER_UPLOAD_STALLED_SECONDS = 180
    assert settings.CELERY_BEAT_SCHEDULE["tracker-uploads-resume"]["task"] == (
        tasks.uploads_resume_task.name
    )
    sent = []
    monkeypatch.setattr(tasks.upload_process_task, "delay", sent.append)
    long_ago = timezone.now() - timedelta(seconds=181)
    recent = timezone.now() - timedelta(seconds=60)

    def make(state: str, created: datetime, progress: datetime | None) -> int:
        upload = uploads.upload_create("x.csv", f"{click.pk},1,T,sale\n".encode(), enqueue=False)
        ConversionUpload.objects.filter(pk=upload.pk).update(
            state=state, created_at=created, progress_at=progress
        )
        return upload.pk

    lost = make("queued", long_ago, None)
    killed = make("running", long_ago, long_ago)
    make("queued", recent, None)
    make("running", long_ago, recent)
    make("done", long_ago, long_ago)
    make("failed", long_ago, long_ago)
    assert tasks.uploads_resume_task() == 2
    assert sent == [lost, killed]
    assert tasks.uploads_resume_task() == 0  # a second beat: taken already, none sent twice
    assert sent == [lost, killed]
    monkeypatch.undo()
    tasks.upload_process_task(lost)  # what the worker then does: the row is imported
    assert ConversionUpload.objects.get(pk=lost).state == "done"
    assert Conversion.objects.filter(click=click, txid="T").count() == 1


def test_progress_time_is_written_by_the_run(click):
    upload = uploads.upload_create("x.csv", f"{click.pk},1,T,sale\n".encode(), enqueue=False)
    assert upload.progress_at is None
    upload = uploads.upload_process(upload)
    assert upload.progress_at is not None and upload.progress_at == upload.finished_at


# --- Properties ---------------------------------------------------------------------------------

cell_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.tuples(st.uuids(), cell_text, cell_text, cell_text, cell_text), min_size=1, max_size=8
    )
)
def test_rows_written_with_csv_parse_back_the_same(records):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    written = []
    for record in records:
        start = buffer.tell()
        writer.writerow([str(record[0]), *record[1:]])
        written.append(buffer.getvalue()[start:])
    text = buffer.getvalue()
    rows = uploads.parse(text)
    assert len(rows) == len(records)
    line = 1
    for row, record, raw in zip(rows, records, written, strict=True):
        assert row.number == line
        assert row.text == raw.removesuffix("\r\n")
        assert row.data == dict(
            zip(uploads.POSITIONAL, [str(record[0]), *(c.strip() for c in record[1:])], strict=True)
        )
        line += len(re.findall(r"\r\n|\r|\n", raw))


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "replace")))
def test_garbage_bytes_never_raise_anything_but_upload_error(data):
    try:
        text, count = uploads.read(data)
    except uploads.UploadError as exc:
        assert str(exc)
        return
    rows = uploads.parse(text)
    assert len(rows) == count > 0
    for row in rows:
        assert (row.data is None) == bool(row.code)


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(',"\r\n ab1-.\u00e9'), max_size=30), min_size=1, max_size=5
    )
)
def test_garbage_rows_each_get_one_result(click, lines):
    text = "\n".join([f"{click.pk},1,T,sale", *lines])
    upload = uploads.upload_create("g.csv", text.encode(), enqueue=False)
    upload = uploads.upload_process(upload)
    assert upload.state == "done"
    numbers = list(
        InboundRequest.objects.filter(upload=upload).values_list("row_number", flat=True)
    )
    assert len(numbers) == len(set(numbers)) == upload.total_rows == upload.processed_rows


def test_a_first_row_with_a_click_id_is_data_even_if_a_cell_reads_clickid():
    """Found by the property above: a positional row whose parameter reads "CLICKID" is not
    a header, since it holds a click ID."""
    text = "e3e70682-c209-4cac-629f-6fbed82c07cd,,,,CLICKID\r\n"
    (row,) = uploads.parse(text)
    assert row.data["click_id"] == "e3e70682-c209-4cac-629f-6fbed82c07cd"
    assert uploads.parse("click_id,payout\r\ne3e70682-c209-4cac-629f-6fbed82c07cd,2\r\n")[
        0
    ].data == {"click_id": "e3e70682-c209-4cac-629f-6fbed82c07cd", "payout": "2"}
