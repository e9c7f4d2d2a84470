"""Hostile and odd input on /c and /cv: precise 4xx, never 500, nothing half-written."""

from __future__ import annotations

import json

import pytest
from django.db import DatabaseError, DataError

from postbacks.models import Delivery
from tests import factories
from tracker import rows, services
from tracker.models import Click, Conversion, InboundRequest

pytestmark = pytest.mark.django_db
UUID0 = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def click():
    return factories.click()


def assert_rejected(response, status: int, code: str) -> InboundRequest:
    assert (response.status_code, response.json()["error"]) == (status, code), response.json()
    assert response.json()["detail"]
    assert not Conversion.objects.exists()
    logged = InboundRequest.objects.get()
    assert (logged.response_status, logged.error_code, logged.outcome) == (
        status,
        code,
        {403: "forbidden", 404: "unknown_click"}.get(
            status, "invalid" if status < 500 else "error"
        ),
    )
    for text in (logged.query, logged.body, logged.detail, logged.user_agent):
        assert "\x00" not in text
    return logged


@pytest.mark.parametrize("field", ["txid", "ct", "param3", "status", "click_id", "token"])
def test_nul_byte_in_a_query_value_is_invalid_characters(client, click, field):
    params = {"click_id": str(click.pk), field: "a\x00b"}
    assert_rejected(client.get("/cv", params), 400, "invalid_characters")


def test_nul_byte_in_form_and_json_bodies(client, click):
    form = client.post("/cv", {"click_id": str(click.pk), "txid": "\x00"})
    assert form.json()["error"] == "invalid_characters"
    body = json.dumps({"click_id": str(click.pk), "ct": "le\x00ad"})
    as_json = client.post("/cv", body, content_type="application/json")
    assert as_json.json()["error"] == "invalid_characters"
    surrogate = f'{{"click_id": "{click.pk}", "txid": "\\ud800"}}'
    lone = client.post("/cv", surrogate, content_type="application/json")
    assert lone.json()["error"] == "invalid_characters"
    assert InboundRequest.objects.filter(error_code="invalid_characters").count() == 3
    assert all("\x00" not in row.body for row in InboundRequest.objects.all())


def test_nul_bytes_in_headers_are_dropped_from_what_is_stored(client, click):
    response = client.get(
        "/cv", {"click_id": str(click.pk)}, HTTP_USER_AGENT="UA\x00x", HTTP_REFERER="r\x00"
    )
    assert response.status_code == 200
    assert InboundRequest.objects.get().user_agent == "UAx"


def test_nul_bytes_on_a_click_are_dropped(client):
    campaign = factories.campaign()
    response = client.get(
        f"/c/{campaign.key}",
        {"external_id": "e\x00x", "site": "s\x00"},
        HTTP_USER_AGENT="Mozilla\x00",
        HTTP_REFERER="https://ref\x00.example/",
    )
    assert response.status_code == 302
    click = Click.objects.get()
    assert (click.external_id, click.var1, click.user_agent) == ("ex", "s", "Mozilla")
    assert click.referrer == "https://ref.example/"


@pytest.mark.parametrize(
    "payout",
    ["9999999999.9999995", "1e1000000", "-1e1000000", "Infinity", "-Infinity", "NaN", "sNaN",
     "1e999999999", "1" * 5000, "-9999999999.9999999", "1e10", "999999999.9999995", "1e9",
     "0x10", ""],
)  # fmt: skip
def test_payouts_the_column_cannot_hold_are_invalid_payout(client, click, payout):
    response = client.get("/cv", {"click_id": str(click.pk), "payout": payout})
    if payout == "":
        assert response.status_code == 200
        return
    assert_rejected(response, 400, "invalid_payout")


@pytest.mark.parametrize(
    "number", ["1e1000000", "-1e1000000", "9999999999.9999995", "1" + "0" * 5000, "Infinity"]
)
def test_json_numbers_out_of_range_are_invalid_payout(client, click, number):
    body = f'{{"click_id": "{click.pk}", "payout": {number}}}'
    response = client.post("/cv", body, content_type="application/json")
    assert_rejected(response, 400, "invalid_payout")


def test_payout_just_below_the_limit_is_kept(client, click):
    response = client.get("/cv", {"click_id": str(click.pk), "payout": "999999999.9999994"})
    assert response.status_code == 200
    assert str(Conversion.objects.get().payout) == "999999999.999999"


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000, "[]", '"x"', "1",
     "null", "true", "{nope", "\xff\xfe", '{"click_id": {"x": 1}}', '{"txid": [1]}'],
)  # fmt: skip
def test_bad_json_bodies_are_invalid_json(client, body):
    response = client.post("/cv", body.encode("latin-1"), content_type="application/json")
    assert_rejected(response, 400, "invalid_json")


def test_json_scalars_of_other_types_are_accepted(client, click):
    body = json.dumps(
        {"click_id": str(click.pk), "payout": 2.5, "txid": 17, "param1": True, "extra": [[1]]}
    )
    response = client.post("/cv", body, content_type="application/json")
    assert response.status_code == 200
    conversion = Conversion.objects.get()
    assert (conversion.txid, conversion.params, str(conversion.payout)) == (
        "17", {"param1": "true"}, "2.500000",
    )  # fmt: skip


@pytest.mark.parametrize(("sent", "stored"), [("APPROVED", "approved"), ("Pending", "pending"),
                                              (" rejected ", "rejected")])  # fmt: skip
def test_status_is_case_insensitive(client, click, sent, stored):
    response = client.get("/cv", {"click_id": str(click.pk), "status": sent})
    assert response.status_code == 200
    assert Conversion.objects.get().status == stored


def test_wrong_method_is_a_logged_json_405(client):
    response = client.put("/cv", "x")
    assert response["Allow"] == "GET, POST"
    assert_rejected(response, 405, "method_not_allowed")
    assert client.post("/c/anything").status_code == 405


def test_body_over_the_upload_limit_is_a_logged_json_413(client, click, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"click_id": str(click.pk), "param1": "x" * 2000}
    logged = assert_rejected(client.post("/cv", body), 413, "body_too_large")
    assert logged.body.startswith("(body not kept")
    as_json = client.post("/cv", json.dumps(body), content_type="application/json")
    assert as_json.status_code == 413


def test_too_many_fields_is_a_logged_json_400(client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    fields = {f"f{i}": "1" for i in range(20)}
    assert_rejected(client.post("/cv", fields), 400, "too_many_fields")
    InboundRequest.objects.all().delete()
    assert_rejected(client.get("/cv", fields), 400, "too_many_fields")
    campaign = factories.campaign()
    response = client.get(f"/c/{campaign.key}", fields)
    assert (response.status_code, response.json()["error"]) == (400, "too_many_fields")


def test_broken_multipart_body_is_invalid_body(client):
    response = client.post(
        "/cv", b"--x\r\nbroken", content_type="multipart/form-data; boundary=x\x00"
    )
    assert response.status_code == 400
    assert InboundRequest.objects.get().response_status == 400


def test_long_method_and_path_are_logged_truncated(client):
    response = client.generic("PROPFINDXYZ", "/cv")
    assert response.status_code == 405
    assert InboundRequest.objects.get().method == "PROPFIND"


def test_a_failure_after_the_insert_commits_nothing_and_is_logged(client, click, monkeypatch):
    factories.rule("https://ts.example/?c={externalid}")

    def broken(**kwargs):
        raise DatabaseError("planning failed")

    monkeypatch.setattr(services, "deliveries_plan", broken)
    response = client.get("/cv", {"click_id": str(click.pk), "txid": "T"})
    assert (response.status_code, response.json()["error"]) == (503, "unavailable")
    assert not Conversion.objects.exists() and not Delivery.objects.exists()
    assert InboundRequest.objects.get().response_status == 503


def test_a_log_row_that_cannot_be_written_takes_the_conversion_with_it(client, click, monkeypatch):
    factories.rule("https://ts.example/?c={externalid}")
    original = rows.insert
    calls = []

    def insert_log_once_broken(objs, *args, **kwargs):
        if isinstance(objs[0], InboundRequest):
            calls.append(objs[0].response_status)
            if len(calls) == 1:
                raise DataError("value too long")
        return original(objs, *args, **kwargs)

    monkeypatch.setattr(rows, "insert", insert_log_once_broken)
    response = client.get("/cv", {"click_id": str(click.pk), "txid": "T"})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
    assert not Conversion.objects.exists() and not Delivery.objects.exists()
    assert InboundRequest.objects.get().error_code == "invalid_request"


def test_a_concurrent_duplicate_is_answered_duplicate(client, click, monkeypatch):
    first = client.get("/cv", {"click_id": str(click.pk), "txid": "T"}).json()
    real = services.click_for_conversion
    calls = []

    def stale_lookup(click_id, txid):
        # The first lookup misses the conversion, as when another request commits it
        # between our SELECT and our INSERT.
        calls.append(txid)
        found, existing, has_conversion = real(click_id, txid)
        return found, existing if len(calls) > 1 else None, has_conversion

    monkeypatch.setattr(services, "click_for_conversion", stale_lookup)
    again = client.get("/cv", {"click_id": str(click.pk), "txid": "T"})
    assert again.json() == {"status": "duplicate", "conversion_id": first["conversion_id"]}
    assert Conversion.objects.count() == 1 and len(calls) == 2
    assert InboundRequest.objects.filter(outcome="duplicate").count() == 1


def test_unknown_click_rejection_detail_has_no_raw_input(client):
    response = client.get("/cv", {"click_id": UUID0})
    assert_rejected(response, 404, "unknown_click_id")
