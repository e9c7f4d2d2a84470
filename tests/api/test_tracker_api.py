"""The tracker app's API: clicks, conversions (list, create as /cv, status changes) and the
inbound conversion log."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from postbacks import services as postbacks
from postbacks.models import Delivery, Trigger
from tests import factories
from tracker.models import (
    Click,
    Conversion,
    ConversionStatusChange,
    InboundRequest,
    RejectionReason,
)

pytestmark = pytest.mark.django_db
URL = "https://ts.example/pb?cid={externalid}&s={status}&r={rejection_reason}"


@pytest.fixture
def click() -> Click:
    return factories.click(external_id="ext-1")


def post_cv(api: APIClient, click: Click, **fields) -> object:
    return api.post("/api/v1/conversions/", {"click_id": str(click.pk), **fields}, format="json")


def ids(answer) -> list:
    assert answer.status_code == 200, answer.content
    return [row["id"] for row in answer.json()["results"]]


# --- Clicks ----------------------------------------------------------------------------------


def test_clicks_list_and_detail(api, click, django_assert_max_num_queries):
    for _ in range(3):
        factories.click(click.campaign)
    with django_assert_max_num_queries(6):
        answer = api.get("/api/v1/clicks/")
    body = answer.json()
    assert answer.status_code == 200 and len(body["results"]) == 4
    assert set(body) == {"next", "previous", "results"}
    row = next(r for r in body["results"] if r["id"] == str(click.pk))
    assert row["campaign"] == click.campaign_id and row["campaign_name"] == "Campaign"
    assert row["external_id"] == "ext-1" and row["offer_name"] == "Offer"
    assert {"country_code", "device_type", "os", "browser", "is_bot", "var1"} <= set(row)
    detail = api.get(f"/api/v1/clicks/{click.pk}/")
    assert detail.status_code == 200 and detail.json()["id"] == str(click.pk)
    assert api.get("/api/v1/clicks/not-a-uuid/").json()["error"] == "not_found"


def test_click_filters(api, click):
    other_source = factories.traffic_source("Other")
    other_offer = factories.offer("Other offer")
    other = factories.click(
        factories.campaign(other_source, other_offer, name="Other"),
        external_id="ext-2",
        country_code="DE",
        device_type="mobile",
        os="Android",
        is_bot=True,
    )
    old = timezone.now() - timedelta(days=3)
    Click.objects.filter(pk=click.pk).update(created_at=old)
    one, two = [str(click.pk)], [str(other.pk)]
    cases = {
        f"campaign={click.campaign_id}": one,
        f"traffic_source={other_source.pk}": two,
        f"offer={other_offer.pk}": two,
        "external_id=ext-1": one,
        "external_id=ext": [],
        f"id={other.pk}": two,
        "country_code=DE": two,
        "device_type=mobile": two,
        "os=Android": two,
        "is_bot=true": two,
        "is_bot=false": one,
        f"created_before={(old + timedelta(days=1)).isoformat().replace('+00:00', 'Z')}": one,
        f"created_after={(old + timedelta(days=1)).isoformat().replace('+00:00', 'Z')}": two,
    }
    for query, expected in cases.items():
        assert ids(api.get(f"/api/v1/clicks/?{query}")) == expected, query
    bad = api.get("/api/v1/clicks/?created_after=yesterday")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid"
    assert api.get("/api/v1/clicks/?device_type=toaster").status_code == 400


def test_click_cursor_pages_are_stable_while_clicks_arrive(api, click):
    camp = click.campaign
    for _ in range(4):
        factories.click(camp)
    before = set(Click.objects.values_list("pk", flat=True))
    seen: list[str] = []
    url = "/api/v1/clicks/?page_size=2"
    while url:
        body = api.get(url).json()
        seen += [row["id"] for row in body["results"]]
        factories.click(camp)  # a click arriving between pages
        url = body["next"]
    assert len(seen) == len(set(seen)) == 5
    assert {str(pk) for pk in before} == set(seen)


# --- Conversions: list and filters -----------------------------------------------------------


def test_conversion_list_detail_and_filters(api, click):
    other = factories.click(
        factories.campaign(factories.traffic_source("Other"), factories.offer("O2"), name="C2")
    )
    a = Conversion.objects.create(click=click, txid="A", dedup_key="t:A", conversion_type="lead")
    b = Conversion.objects.create(
        click=other,
        txid="B",
        dedup_key="t:B",
        conversion_type="sale",
        status="rejected",
        method="api",
        is_test=True,
    )
    old = timezone.now() - timedelta(days=2)
    Conversion.objects.filter(pk=a.pk).update(created_at=old)
    assert ids(api.get("/api/v1/conversions/")) == [b.pk, a.pk]
    row = api.get(f"/api/v1/conversions/{a.pk}/").json()
    assert row["click"] == str(click.pk) and row["campaign"] == click.campaign_id
    assert row["payout"] == "0.000000" and row["status"] == "approved"
    cut = (old + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    cases = {
        "status=rejected": [b.pk],
        "method=s2s": [a.pk],
        "conversion_type=lead": [a.pk],
        "txid=B": [b.pk],
        f"click_id={click.pk}": [a.pk],
        f"campaign={other.campaign_id}": [b.pk],
        f"traffic_source={click.traffic_source_id}": [a.pk],
        f"offer={other.offer_id}": [b.pk],
        "is_test=true": [b.pk],
        f"created_before={cut}": [a.pk],
        f"created_after={cut}": [b.pk],
    }
    for query, expected in cases.items():
        assert ids(api.get(f"/api/v1/conversions/?{query}")) == expected, query
    assert api.get("/api/v1/conversions/?status=maybe").status_code == 400
    assert api.get("/api/v1/conversions/?click_id=nope").status_code == 400
    assert api.get("/api/v1/conversions/abc/").status_code == 404


def test_conversion_cursor_pages_are_stable_while_conversions_arrive(api, click):
    for i in range(5):
        Conversion.objects.create(click=click, txid=f"T{i}", dedup_key=f"t:T{i}")
    before = list(Conversion.objects.order_by("-pk").values_list("pk", flat=True))
    seen: list[int] = []
    url = "/api/v1/conversions/?page_size=2"
    n = 0
    while url:
        body = api.get(url).json()
        seen += [row["id"] for row in body["results"]]
        n += 1
        Conversion.objects.create(click=click, txid=f"N{n}", dedup_key=f"t:N{n}")
        url = body["next"]
    assert seen == before


# --- Conversions: create through the /cv path -----------------------------------------------


def test_create_then_duplicate_then_status_change(api, click):
    answer = post_cv(api, click, payout="12.50", txid="T-1", ct="lead", param1="x")
    assert answer.status_code == 201, answer.content
    conversion = Conversion.objects.get()
    assert answer.json() == {"status": "ok", "conversion_id": conversion.pk}
    assert conversion.method == "api" and conversion.payout == 12.5
    assert conversion.params == {"param1": "x"}
    log = InboundRequest.objects.get()
    assert log.channel == InboundRequest.Channel.API and log.outcome == "accepted"
    assert log.conversion_id == conversion.pk and json.loads(log.body)["txid"] == "T-1"
    again = post_cv(api, click, payout="12.50", txid="T-1")
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "conversion_id": conversion.pk}
    changed = post_cv(api, click, txid="T-1", status="rejected", rejection_reason="fraud")
    assert changed.status_code == 200 and changed.json()["status"] == "status_changed"
    assert ConversionStatusChange.objects.get().source == ConversionStatusChange.Source.API
    assert list(InboundRequest.objects.order_by("id").values_list("outcome", flat=True)) == [
        "accepted",
        "duplicate",
        "status_changed",
    ]


def test_create_accepts_json_numbers_and_booleans_exactly(api, click):
    answer = post_cv(api, click, payout=0.1, txid=7, test=True, currency="eur")
    assert answer.status_code == 201, answer.content
    assert answer.json()["test"] is True
    conversion = Conversion.objects.get()
    assert str(conversion.payout) == "0.100000" and conversion.txid == "7"
    assert conversion.currency == "EUR" and conversion.is_test


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"payout": "abc"}, 400, "invalid_payout"),
        ({"payout": "9" * 10_000}, 400, "invalid_payout"),
        ({"payout": int("9" * 4000)}, 400, "invalid_payout"),
        ({"txid": "a\x00b"}, 400, "invalid_characters"),
        ({"status": "maybe"}, 400, "invalid_status"),
        ({"payout_currency": "XXQ"}, 400, "invalid_payout_currency"),
        ({"token": "s3cret"}, 400, "invalid_request"),
        ({"payout": {"amount": 1}}, 400, "invalid_request"),
    ],
)
def test_create_refusals_are_400_and_logged(api, click, fields, status, code):
    answer = post_cv(api, click, **fields)
    assert answer.status_code == status, answer.content
    assert answer.json()["error"] == code and set(answer.json()) == {"error", "detail"}
    assert not Conversion.objects.exists()
    log = InboundRequest.objects.get()
    assert (log.channel, log.error_code, log.response_status) == ("api", code, status)


def test_create_bad_bodies_never_500(api, click):
    raw = f'{{"click_id": "{click.pk}", "payout": 1{"0" * 10_000}}}'
    answer = api.post("/api/v1/conversions/", raw, content_type="application/json")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_payout"
    nul = api.post(
        "/api/v1/conversions/",
        f'{{"click_id": "{click.pk}", "ct": "le\\u0000ad"}}',
        content_type="application/json",
    )
    assert nul.status_code == 400 and nul.json()["error"] == "invalid_characters"
    broken = api.post("/api/v1/conversions/", "{not json", content_type="application/json")
    assert broken.status_code == 400 and broken.json()["error"] == "parse_error"
    listed = api.post("/api/v1/conversions/", "[1, 2]", content_type="application/json")
    assert listed.status_code == 400 and listed.json()["error"] == "invalid_request"
    assert not Conversion.objects.exists()


def test_create_unknown_and_missing_click(api):
    answer = api.post(
        "/api/v1/conversions/",
        {"click_id": "6f1c0d6e-6a53-4b7e-9b55-111111111111"},
        format="json",
    )
    assert answer.status_code == 404
    assert answer.json()["error"] == "unknown_click_id"
    log = InboundRequest.objects.get()
    assert log.outcome == InboundRequest.Outcome.UNKNOWN_CLICK and log.channel == "api"
    missing = api.post("/api/v1/conversions/", {"payout": "1"}, format="json")
    assert missing.status_code == 400 and missing.json()["error"] == "missing_click_id"


# --- Conversions: status changes -------------------------------------------------------------


def test_status_change_with_rejection_reason_fires_a_matching_rule(api, click):
    fraud, _ = RejectionReason.objects.get_or_create(code="fraud", defaults={"label": "Fraud"})
    rule = factories.rule(URL, statuses=["rejected"], trigger=Trigger.CHANGED)
    rule.rejection_reasons.set([fraud])
    postbacks.rules_cache_clear()
    assert post_cv(api, click, txid="L-1", status="pending").status_code == 201
    conversion = Conversion.objects.get()
    answer = api.post(
        f"/api/v1/conversions/{conversion.pk}/status/",
        {"status": "Rejected", "rejection_reason": "FRAUD", "note": "checked by hand"},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["status"], body["previous_status"], body["new_status"]) == (
        "status_changed",
        "pending",
        "rejected",
    )
    assert body["rejection_reason"] == "fraud"
    change = ConversionStatusChange.objects.get()
    assert change.pk == body["change_id"]
    assert (change.source, change.note, change.user.is_superuser) == (
        "api",
        "checked by hand",
        True,
    )
    (delivery,) = Delivery.objects.filter(rule=rule)
    assert delivery.url == "https://ts.example/pb?cid=ext-1&s=rejected&r=fraud"
    conversion.refresh_from_db()
    assert (conversion.status, conversion.rejection_reason) == ("rejected", "fraud")
    same = api.post(
        f"/api/v1/conversions/{conversion.pk}/status/", {"status": "rejected"}, format="json"
    )
    assert same.status_code == 200 and same.json()["status"] == "unchanged"
    assert Delivery.objects.filter(rule=rule).count() == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"status": "maybe"}, "invalid_status"),
        ({}, "invalid"),
        ({"status": "approved", "colour": "red"}, "invalid"),
        ({"status": "rejected", "rejection_reason": "a\x00b"}, "invalid"),
        ({"status": "rejected", "note": "x" * 3000}, "invalid"),
    ],
)
def test_status_change_refusals(api, click, body, code):
    conversion = Conversion.objects.create(click=click, txid="A", dedup_key="t:A")
    answer = api.post(f"/api/v1/conversions/{conversion.pk}/status/", body, format="json")
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == code
    assert not ConversionStatusChange.objects.exists()


def test_status_change_of_an_unknown_conversion_is_404(api):
    answer = api.post("/api/v1/conversions/999999/status/", {"status": "rejected"}, format="json")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"


# --- Permissions -----------------------------------------------------------------------------


def test_permissions(api_for, click):
    conversion = Conversion.objects.create(click=click, txid="A", dedup_key="t:A")
    viewer = api_for("view_click", "view_conversion", "view_inboundrequest")
    assert viewer.get("/api/v1/clicks/").status_code == 200
    assert viewer.get("/api/v1/conversions/").status_code == 200
    assert viewer.get("/api/v1/inbound-requests/").status_code == 200
    refused = post_cv(viewer, click, txid="B")
    assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"
    status_url = f"/api/v1/conversions/{conversion.pk}/status/"
    assert viewer.post(status_url, {"status": "rejected"}, format="json").status_code == 403
    adder = api_for("view_conversion", "add_conversion")
    assert post_cv(adder, click, txid="B").status_code == 201
    assert adder.post(status_url, {"status": "rejected"}, format="json").status_code == 403
    changer = api_for("view_conversion", "change_conversion")
    assert post_cv(changer, click, txid="C").status_code == 403
    assert changer.post(status_url, {"status": "rejected"}, format="json").status_code == 200
    assert api_for("view_conversion").get("/api/v1/clicks/").status_code == 403
    anonymous = APIClient()
    for url in ("/api/v1/clicks/", "/api/v1/conversions/", "/api/v1/inbound-requests/"):
        assert anonymous.get(url).status_code == 401
    answer = anonymous.post("/api/v1/conversions/", {"click_id": str(click.pk)}, format="json")
    assert answer.status_code == 401 and answer.json()["error"] == "not_authenticated"
    assert Conversion.objects.count() == 2


# --- Inbound log -----------------------------------------------------------------------------


def test_inbound_log_list_and_filters(api, client, click):
    client.get("/cv", {"click_id": str(click.pk), "txid": "S"})
    post_cv(api, click, txid="A")
    post_cv(api, click, payout="x")
    network = click.offer.affiliate_network
    rows = {r.outcome: r for r in InboundRequest.objects.all()}
    InboundRequest.objects.filter(pk=rows["invalid"].pk).update(
        created_at=timezone.now() - timedelta(days=2)
    )
    s2s = InboundRequest.objects.get(channel="s2s").pk
    api_ok = InboundRequest.objects.get(channel="api", outcome="accepted").pk
    bad = rows["invalid"].pk
    # Newest first by time: the backdated refusal comes last.
    assert ids(api.get("/api/v1/inbound-requests/")) == [api_ok, s2s, bad]
    row = api.get(f"/api/v1/inbound-requests/{bad}/").json()
    assert row["error_code"] == "invalid_payout" and row["response_status"] == 400
    cut = (timezone.now() - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    cases = {
        "channel=api": [api_ok, bad],
        "outcome=accepted": [api_ok, s2s],
        "error_code=invalid_payout": [bad],
        f"network={network.pk}": [api_ok, s2s],
        f"click_id={click.pk}": [api_ok, s2s, bad],
        "click_id=other": [],
        f"created_before={cut}": [bad],
        f"created_after={cut}": [api_ok, s2s],
    }
    for query, expected in cases.items():
        assert ids(api.get(f"/api/v1/inbound-requests/?{query}")) == expected, query
    assert api.get("/api/v1/inbound-requests/?channel=fax").status_code == 400


def test_date_filters_take_any_offset_and_refuse_what_has_no_utc_time(api):
    """An offset PostgreSQL cannot store (-19:52) is converted to UTC, not sent as is (it
    was a 500); a time before year 1 in UTC, or no date at all, is a 400."""
    for path in ("/api/v1/conversions/", "/api/v1/deliveries/", "/api/v1/attempts/"):
        odd = api.get(path, {"created_before": "0621-12-14T16:06:41.41-19:52"})
        assert odd.status_code == 200, (path, odd.content)
        for value in ("0001-01-01T00:00:00+01:00", "not a date"):
            answer = api.get(path, {"created_before": value})
            assert answer.status_code == 400, (path, value, answer.content)
            assert answer.json()["error"] == "invalid"


# --- Conversions: refusals before ingest are logged too --------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"click_id": "abc", "payout": ', "application/json", 400, "parse_error"),
        ("[" * 5000, "application/json", 400, "parse_error"),
        ("click_id=abc&payout=1", "text/plain", 415, "unsupported_media_type"),
        ("<cv click_id='abc'/>", "application/xml", 415, "unsupported_media_type"),
    ],
)
def test_create_unreadable_bodies_are_answered_as_before_and_logged(
    api, body, content_type, status, code
):
    answer = api.post("/api/v1/conversions/", body, content_type=content_type)
    assert answer.status_code == status, answer.content
    assert set(answer.json()) == {"error", "detail"} and answer.json()["error"] == code
    log = InboundRequest.objects.get()
    assert (log.channel, log.outcome, log.response_status, log.error_code) == (
        "api",
        "invalid",
        status,
        code,
    )
    assert log.detail == answer.json()["detail"]
    assert log.body == body[:4000] and log.method == "POST"
    assert log.endpoint == "/api/v1/conversions/" and log.conversion_id is None
    assert not Conversion.objects.exists()


def test_create_multipart_is_415_and_logged_with_the_raw_body(api):
    answer = api.post("/api/v1/conversions/", {"click_id": "abc"}, format="multipart")
    assert answer.status_code == 415 and answer.json()["error"] == "unsupported_media_type"
    log = InboundRequest.objects.get()
    assert log.error_code == "unsupported_media_type" and 'name="click_id"' in log.body


def test_create_a_body_over_the_limit_is_413_and_logged(api, click, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    raw = json.dumps({"click_id": str(click.pk), "param1": "x" * 5000})
    answer = api.post("/api/v1/conversions/", raw, content_type="application/json")
    assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"
    log = InboundRequest.objects.get()
    assert (log.channel, log.outcome, log.response_status) == ("api", "invalid", 413)
    assert log.error_code == "body_too_large" and log.body == f"(body not kept: {len(raw)} bytes)"


def test_create_a_form_with_too_many_fields_is_a_json_400_and_logged(api):
    """Django refuses it (TooManyFieldsSent): it was an HTML 400, not logged."""
    body = "&".join(f"f{i}=1" for i in range(1500))
    answer = api.post(
        "/api/v1/conversions/", body, content_type="application/x-www-form-urlencoded"
    )
    assert answer.status_code == 400 and answer.json()["error"] == "parse_error"
    log = InboundRequest.objects.get()
    assert (log.error_code, log.response_status) == ("parse_error", 400)
    assert log.body == body[:4000]


def test_create_refusals_before_authentication_or_permission_are_not_logged(api_for):
    anonymous, viewer = APIClient(), api_for("view_conversion")
    for client, status in ((anonymous, 401), (viewer, 403)):
        for body, content_type in (("{bad", "application/json"), ("x", "text/plain")):
            answer = client.post("/api/v1/conversions/", body, content_type=content_type)
            assert answer.status_code == status, answer.content
    assert not InboundRequest.objects.exists()
