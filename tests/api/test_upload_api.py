"""``/api/v1/conversion-uploads/``: CSV file or JSON rows, processed now (wait) or queued,
the upload's counters and its per-row results."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from rest_framework.test import APIClient

from tests import factories
from tracker import tasks
from tracker.models import Click, Conversion, ConversionUpload, InboundRequest

pytestmark = pytest.mark.django_db
URL = "/api/v1/conversion-uploads/"
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "manual_upload.csv"
EXPECTED = [
    (1, "unknown_click", "unknown_click_id"),
    (2, "accepted", ""),
    (3, "accepted", ""),
    (4, "invalid", "invalid_click_id"),
    (5, "invalid", "invalid_payout"),
    (6, "status_changed", ""),
]
COUNTERS = {
    "state": "done",
    "total_rows": 6,
    "processed_rows": 6,
    "accepted": 2,
    "duplicates": 0,
    "status_changes": 1,
    "errors": 3,
    "error": "",
}


@pytest.fixture
def click() -> Click:
    """A click from before the fixture's timestamps (a conversion may not precede it)."""
    created = factories.click(external_id="ext-up")
    Click.objects.filter(pk=created.pk).update(created_at=datetime(2025, 10, 1, tzinfo=UTC))
    created.refresh_from_db()
    return created


def fixture_bytes(click: Click) -> bytes:
    return FIXTURE.read_bytes().replace(b"CLICK_ID_FROM_DEMO", str(click.pk).encode())


def fixture_rows(click: Click) -> list[dict]:
    keys = ("click_id", "payout", "txid", "ct", "timestamp")
    text = fixture_bytes(click).decode()
    return [dict(zip(keys, cells, strict=True)) for cells in csv.reader(io.StringIO(text))]


def post_file(api: APIClient, data: bytes, name: str = "conversions.csv", **extra) -> object:
    return api.post(
        URL, {"file": SimpleUploadedFile(name, data, "text/csv"), **extra}, format="multipart"
    )


def triples(rows: list[dict]) -> list[tuple[int, str, str]]:
    return [(r["row_number"], r["outcome"], r["error_code"]) for r in rows]


def assert_fixture_done(answer, click: Click, first_row: int = 1) -> None:
    """The fixture's results; ``first_row``: the number of its first row (2 with a header)."""
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert {k: body[k] for k in COUNTERS} == COUNTERS
    assert body["finished_at"] and "content" not in body
    shift = first_row - 1
    assert triples(body["rows"]) == [(n + shift, o, c) for n, o, c in EXPECTED]
    lead = Conversion.objects.get(txid="ord-7781")
    upsell = Conversion.objects.get(txid="ord-7781-up1")
    assert lead.status == "refunded" and lead.method == "upload"
    conversions = [r["conversion"] for r in body["rows"]]
    assert conversions == [None, lead.pk, upsell.pk, None, None, lead.pk]
    assert body["rows"][0]["click_id"] == "b39be7d3-71b8-4df1-b4b7-921995a23c1f"
    assert "Status changed approved → refunded" in body["rows"][5]["detail"]
    assert body["rows"][4]["detail"].startswith("payout:")
    assert body["results"].endswith(f"{URL}{body['id']}/rows/")


def test_file_with_wait_is_processed_with_one_result_per_row(api, click):
    answer = post_file(api, fixture_bytes(click), wait="true")
    assert_fixture_done(answer, click)
    upload = ConversionUpload.objects.get()
    assert upload.file_name == "conversions.csv" and upload.uploaded_by is not None
    assert {r.channel for r in InboundRequest.objects.filter(upload=upload)} == {"upload"}


def test_json_rows_give_the_same_results(api, click):
    """JSON rows are written as a CSV file with a header: rows[i] is row i + 2."""
    answer = api.post(f"{URL}?wait=1", {"rows": fixture_rows(click)}, format="json")
    assert_fixture_done(answer, click, first_row=2)


def test_json_rows_with_wait_in_the_body_and_numbers(api, click):
    rows = [{"click_id": str(click.pk), "payout": 1.25, "txid": "n1", "ct": "sale"}]
    answer = api.post(URL, {"rows": rows, "wait": True}, format="json")  # a float is read exactly
    assert answer.status_code == 201, answer.content
    assert triples(answer.json()["rows"]) == [(2, "accepted", "")]
    assert str(Conversion.objects.get(txid="n1").payout) == "1.250000"


class Undo(Exception):
    """Raised to roll an upload back (a savepoint), so the same rows can be sent again."""


def rows_and_conversions(post) -> tuple[list[dict], list[tuple]]:
    """The per-row results of ``post()`` (without conversion IDs) and the conversions it
    made (the conversion time only when sent), then everything it wrote rolled back."""
    try:
        with transaction.atomic():
            answer = post()
            assert answer.status_code == 201, answer.content
            rows = [
                {k: v for k, v in r.items() if k != "conversion"} for r in answer.json()["rows"]
            ]
            fields = ("txid", "conversion_type", "status", "rejection_reason", "payout")
            made = [
                # The conversion time when a row sent one (else the upload's time).
                (*row, at if at.year == 2025 else None)
                for *row, at in Conversion.objects.order_by("pk").values_list(
                    *fields, "currency", "params", "converted_at"
                )
            ]
            raise Undo
    except Undo:
        pass
    assert not ConversionUpload.objects.exists()
    return rows, made


def test_json_rows_take_every_csv_column_and_give_the_csv_results(api, click):
    """Status, rejection reason, currency, param1..param20 and the header's aliases, in JSON
    rows as in a CSV file with a header: the same row numbers, outcomes, details and
    conversions."""
    cid = str(click.pk)
    rows = [
        {
            "click_id": cid,
            "revenue": "5",
            "transaction_id": "j-1",
            "conversion_type": "sale",
            "currency": "eur",
            "param1": "p1",
            "param20": 20,
        },
        {"cf_click_id": cid, "txid": "j-2", "ct": "lead", "status": "Pending", "payout": 1.5},
        {
            "click_id": cid,
            "txid": "j-2",
            "ct": "lead",
            "status": "rejected",
            "rejection_reason": "fraud",
        },
        {"click_id": cid, "txid": "j-3", "status": "maybe"},
        {
            "clickid": cid,
            "txid": "j-4",
            "conversion_time": "2025-10-02T14:30:00Z",
            "status": None,
            "payout_currency": "USD",
        },
        {"click_id": cid, "txid": "j-1", "ct": "sale"},
    ]
    csv_text = (
        "Transaction ID,Click ID,Revenue,Conversion Type,Status,Rejection Reason,Currency,"
        "Conversion Time,param1,param20\n"
        f"j-1,{cid},5,sale,,,eur,,p1,20\n"
        f"j-2,{cid},1.5,lead,Pending,,,,,\n"
        f"j-2,{cid},,lead,rejected,fraud,,,,\n"
        f"j-3,{cid},,,maybe,,,,,\n"
        f"j-4,{cid},,,,,USD,2025-10-02T14:30:00Z,,\n"
        f"j-1,{cid},,sale,,,,,,\n"
    )
    json_rows, json_made = rows_and_conversions(
        lambda: api.post(f"{URL}?wait=true", {"rows": rows}, format="json")
    )
    csv_rows, csv_made = rows_and_conversions(
        lambda: post_file(api, csv_text.encode(), wait="true")
    )
    assert json_rows == csv_rows and json_made == csv_made
    assert triples(json_rows) == [
        (2, "accepted", ""),
        (3, "accepted", ""),
        (4, "status_changed", ""),
        (5, "invalid", "invalid_status"),
        (6, "accepted", ""),
        (7, "duplicate", ""),
    ]
    assert json_rows[2]["detail"].startswith("Status changed pending → rejected")
    assert json_rows[5]["detail"].startswith("Duplicate of row 2")
    by_txid = {made[0]: made for made in json_made}
    assert by_txid["j-1"][4:7] == (Decimal("5"), "EUR", {"param1": "p1", "param20": "20"})
    assert by_txid["j-2"][2:4] == ("rejected", "fraud")
    assert by_txid["j-4"][5] == "USD"
    assert by_txid["j-4"][7] == datetime(2025, 10, 2, 14, 30, tzinfo=UTC)
    assert by_txid["j-1"][7] is None


def test_queued_by_default(api, click, monkeypatch, django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(tasks.upload_process_task, "delay", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        answer = post_file(api, fixture_bytes(click))
    assert answer.status_code == 202, answer.content
    body = answer.json()
    upload = ConversionUpload.objects.get()
    assert sent == [upload.pk]
    assert (body["id"], body["state"], body["total_rows"], body["processed_rows"]) == (
        upload.pk,
        "queued",
        6,
        0,
    )
    assert "rows" not in body and body["results"].endswith(f"{URL}{upload.pk}/rows/")
    assert not InboundRequest.objects.exists()


def test_wait_with_more_than_1000_rows_is_queued(
    api, monkeypatch, django_capture_on_commit_callbacks
):
    sent = []
    monkeypatch.setattr(tasks.upload_process_task, "delay", sent.append)
    rows = [{"click_id": "x", "payout": "1", "txid": f"t{i}", "ct": "sale"} for i in range(1001)]
    with django_capture_on_commit_callbacks(execute=True):
        answer = api.post(f"{URL}?wait=true", {"rows": rows}, format="json")
    assert answer.status_code == 202, answer.content
    assert answer.json()["total_rows"] == 1001 and len(sent) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x" * 101, "too large"),
        (b"PK\x03\x04garbage", "Excel workbook"),
        (b"caf\xe9,1,t,sale\n", "not UTF-8"),
        (b"\xef\xbb\xbf", "no conversion rows"),
        (b"click_id,bogus\n1,2\n", "unknown column"),
    ],
)
def test_a_bad_file_is_refused(api, settings, data, message):
    settings.TRACKER_UPLOAD_MAX_BYTES = 100
    answer = post_file(api, data, wait="true")
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_file" and message in body["detail"], body
    assert not ConversionUpload.objects.exists()


def test_a_missing_file_is_refused(api):
    answer = api.post(URL, {"wait": "true"}, format="multipart")
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid", "detail": {"file": ["No file was submitted."]}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rows": []}, "non-empty list"),
        ({}, "non-empty list"),
        ({"rows": [{"click_id": "a", "colour": "x"}]}, "rows[0]: unknown field(s) colour; known:"),
        (
            {"rows": [{"click_id": "a"}, {"click_id": "b", "Status": "x", "zz": 1}]},
            "rows[1]: unknown field(s) Status, zz",
        ),
        (
            {"rows": [{"click_id": "a", "txid": "1", "transaction_id": "2"}]},
            "rows[0]: txid and transaction_id are the same column",
        ),
        ({"rows": [{"click_id": "a", "currency": "EUR", "payout_currency": "USD"}]}, "same column"),
        ({"rows": [{"click_id": "a", "status": True}]}, "rows[0].status must be a string"),
        ({"rows": ["a,1"]}, "rows[0] must be an object"),
        ({"rows": [{"click_id": "a\nb"}]}, "line break"),
        ({"rows": [{"click_id": {"a": 1}}]}, "string or a number"),
        ({"rows": [{"click_id": "a"}, {"payout": ""}]}, "rows[1] is empty"),
    ],
)
def test_bad_json_rows_are_refused(api, body, message):
    answer = api.post(URL, body, format="json")
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert answer.json()["error"] == "invalid" and message in detail["rows"][0], detail
    assert not ConversionUpload.objects.exists()


def test_too_many_json_rows_are_refused(api):
    rows = [{"click_id": "x"}] * 10_001
    answer = api.post(URL, {"rows": rows}, format="json")
    assert answer.status_code == 400
    assert "Too many rows: 10,001, at most 10,000" in answer.json()["detail"]["rows"][0]
    assert not ConversionUpload.objects.exists()


def test_unknown_body_field_and_bad_wait_are_refused(api):
    answer = api.post(URL, {"rows": [{"click_id": "x"}], "wiat": True}, format="json")
    assert answer.status_code == 400 and "wiat" in answer.json()["detail"]
    answer = api.post(f"{URL}?wait=maybe", {"rows": [{"click_id": "x"}]}, format="json")
    assert answer.status_code == 400 and "wait" in answer.json()["detail"]


def test_permissions(api_for, click):
    viewer = api_for("view_conversionupload")
    assert post_file(viewer, fixture_bytes(click)).status_code == 403
    assert viewer.get(URL).status_code == 200
    uploader_only = api_for("add_conversionupload")  # the admin needs add_conversion too
    assert post_file(uploader_only, fixture_bytes(click)).status_code == 403
    uploader = api_for("add_conversionupload", "add_conversion")
    assert post_file(uploader, fixture_bytes(click), wait="true").status_code == 201
    assert uploader.get(URL).status_code == 403
    assert api_for().get(URL).status_code == 403
    anonymous = APIClient()
    for answer in (anonymous.get(URL), post_file(anonymous, fixture_bytes(click))):
        assert answer.status_code == 401
        assert answer.json()["error"] == "not_authenticated"
    assert ConversionUpload.objects.count() == 1


def test_list_and_detail_never_show_the_content(api, click):
    first = post_file(api, fixture_bytes(click), name="a.csv", wait="true").json()
    second = post_file(api, b"not-a-click,1,t,sale\n", name="b.csv", wait="true").json()
    listed = api.get(URL)
    assert listed.status_code == 200
    body = listed.json()
    assert body["count"] == 2
    assert [u["id"] for u in body["results"]] == [second["id"], first["id"]]
    detail = api.get(f"{URL}{first['id']}/").json()
    assert {k: detail[k] for k in COUNTERS} == COUNTERS
    assert detail["file_name"] == "a.csv" and "content" not in detail
    for key in ("created_at", "finished_at", "progress_at", "uploaded_by"):
        assert detail[key]
    assert api.get(f"{URL}999999/").status_code == 404


def test_rows_endpoint_pages_by_row_number(api, click):
    upload = post_file(api, fixture_bytes(click), wait="true").json()
    answer = api.get(f"{URL}{upload['id']}/rows/?page_size=4")
    assert answer.status_code == 200, answer.content
    page = answer.json()
    assert page["count"] == 6 and page["next"]
    second = api.get(page["next"]).json()
    assert triples(page["results"] + second["results"]) == EXPECTED
    assert page["results"] == upload["rows"][:4]
    assert api.get(f"{URL}999999/rows/").status_code == 404


def test_rows_endpoint_of_a_queued_upload_is_empty(api, click, monkeypatch):
    monkeypatch.setattr(tasks.upload_process_task, "delay", lambda upload_id: None)
    upload = post_file(api, fixture_bytes(click)).json()
    answer = api.get(upload["results"])
    assert answer.status_code == 200 and answer.json()["results"] == []
