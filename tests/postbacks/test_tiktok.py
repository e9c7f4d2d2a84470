"""TikTok Events API: the planned request field by field against TikTok's Events API 2.0
format, the Access-Token header added only at sending time, return codes classified, the
rule checks."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from postbacks.models import PostbackRule
from postbacks.receiver import Reply
from postbacks.transports import Secrets, TikTokEventsAPI
from tests import factories
from tracker import macros
from tracker.models import Conversion

TIKTOK = TikTokEventsAPI()
PIXEL = "CQ1ABCDE2FGH3IJK4LM0"
NOW = int(time.time())
UA = "Mozilla/5.0 (Linux; Android 14; SM-S911B) AppleWebKit/537.36 Chrome/124.0 Mobile"
TOKEN = "5a1f/+=?&#%é✓'\" tok"  # odd characters; spaces inside are legal in a header value


def make_rule(**fields) -> PostbackRule:
    fields.setdefault("kind", "tiktok")
    fields.setdefault("account_id", PIXEL)
    fields.setdefault("access_token", "ttoken123")
    fields.setdefault("statuses", ["approved"])
    return PostbackRule(name="TikTok", **fields)


def context(**values: str) -> dict[str, str]:
    base = {
        "externalid": "E.C.P.v3ab12cd",
        "trafficsource.externalid_param": "ttclid",
        "ip": "2001:db8::7",
        "user_agent": UA,
        "transaction.id": "T-7",
        "conversion.id": "70",
        "conversion.type": "lead",
        "payout": "4",
        "payout_currency": "eur",
        "timestamp": str(NOW - 30),
        "event.type": "conversion",
        "delivery.id": "6f1d0c52-1111-4a2b-9c3d-000000000001",
    }
    return {**base, **values}


def fake_response(status, headers=None):
    return SimpleNamespace(status_code=status, headers=headers or {})


def test_planned_request_is_tiktoks_documented_format(settings):
    settings.POSTBACKS_TIKTOK_BASE_URL = "https://tiktok.example/"
    rule = make_rule(test_event_code="TEST98765", url_template="https://shop.example/done")
    request = TIKTOK.prepare(rule, context())

    assert request.method == "POST"
    assert request.url == "https://tiktok.example/open_api/v1.3/event/track/"
    assert request.headers == {
        "Content-Type": "application/json",
        "Idempotency-Key": "6f1d0c52-1111-4a2b-9c3d-000000000001",
    }
    assert json.loads(request.body) == {
        "event_source": "web",
        "event_source_id": PIXEL,
        "test_event_code": "TEST98765",
        "data": [
            {
                "event": "Lead",
                "event_time": NOW - 30,
                "event_id": "T-7",
                "user": {"ttclid": "E.C.P.v3ab12cd", "ip": "2001:db8::7", "user_agent": UA},
                "properties": {"value": 4, "currency": "EUR"},
                "page": {"url": "https://shop.example/done"},
            }
        ],
    }
    assert "ttoken123" not in request.url + request.body + json.dumps(request.headers)


@pytest.mark.django_db
def test_request_from_a_recorded_click_and_conversion():
    source = factories.traffic_source("TikTok", external_id_param="ttclid")
    click = factories.click(
        factories.campaign(source), external_id="E.C.P.real", ip="198.51.100.9", user_agent=UA
    )
    conversion = Conversion.objects.create(
        click=click, dedup_key="c:sale", conversion_type="sale",
        payout=Decimal("19.990000"), currency="USD",
    )  # fmt: skip
    built = macros.build_context(click, conversion)
    (event,) = json.loads(TIKTOK.prepare(make_rule(), built).body)["data"]
    assert event == {
        "event": "Purchase",
        "event_time": int(conversion.created_at.timestamp()),
        "event_id": f"conversion-{conversion.pk}",
        "user": {"ttclid": "E.C.P.real", "ip": "198.51.100.9", "user_agent": UA},
        "properties": {"value": 19.99, "currency": "USD"},
    }


@pytest.mark.parametrize(
    ("values", "ttclid"),
    [
        ({}, "E.C.P.v3ab12cd"),
        ({"trafficsource.externalid_param": "click_id", "var:ttclid": "E.C.P.var"}, "E.C.P.var"),
        ({"trafficsource.externalid_param": "click_id"}, None),
        ({"externalid": ""}, None),
    ],
)
def test_ttclid_comes_from_the_click(values, ttclid):
    (event,) = json.loads(TIKTOK.prepare(make_rule(), context(**values)).body)["data"]
    assert event["user"].get("ttclid") == ttclid


@pytest.mark.parametrize(
    ("names", "conversion_type", "expected"),
    [
        ({}, "sale", "Purchase"),
        ({}, "lead", "Lead"),
        ({}, "signup", "CompleteRegistration"),
        ({}, "other", "Purchase"),
        ({"sale": "CompletePayment"}, "sale", "CompletePayment"),
        ({"*": "SubmitForm"}, "other", "SubmitForm"),
    ],
)
def test_event_names(names, conversion_type, expected):
    values = context(**{"conversion.type": conversion_type})
    (event,) = json.loads(TIKTOK.prepare(make_rule(event_names=names), values).body)["data"]
    assert event["event"] == expected


def test_api_version_override():
    request = TIKTOK.prepare(make_rule(api_version="v1.4"), context())
    assert request.url.endswith("/open_api/v1.4/event/track/")


def test_huge_nul_and_broken_values_stay_valid_json():
    evil = '\x00"]}\\\r\n' + "\udfff" + "ü" * 100_000
    values = context(user_agent=evil, externalid=evil, payout="1e999999")
    document = json.loads(TIKTOK.prepare(make_rule(), values).body)
    (event,) = document["data"]
    assert event["user"]["user_agent"] == event["user"]["ttclid"] == evil.replace("\udfff", "?")
    assert "value" not in event["properties"]


def test_authorize_adds_the_header_to_the_sent_request_only():
    planned = TIKTOK.prepare(make_rule(), context())
    sent = TIKTOK.authorize(planned, Secrets(access_token=f"  {TOKEN}\n"))
    assert sent.headers["Access-Token"] == TOKEN
    assert "Access-Token" not in planned.headers
    assert (sent.url, sent.body) == (planned.url, planned.body)


@pytest.mark.parametrize("token", ["", "tok\r\nX-Injected: 1", "tok\x00en"])
def test_authorize_refuses_an_unusable_token(token):
    with pytest.raises(ValueError, match="access token"):
        TIKTOK.authorize(TIKTOK.prepare(make_rule(), context()), Secrets(access_token=token))


def test_a_token_with_a_line_break_is_not_sent(receiver, settings):
    settings.POSTBACKS_TIKTOK_BASE_URL = receiver.url
    planned = TIKTOK.prepare(make_rule(), context())
    result = TIKTOK.send(planned, timeout=5, secrets=Secrets(access_token="abc\r\nX-Evil: 1"))
    assert result.outcome == "failed"
    assert result.error == "Not sent: the access token holds control characters: enter it again."
    assert receiver.received == []


def test_the_request_on_the_wire(receiver, settings):
    settings.POSTBACKS_TIKTOK_BASE_URL = receiver.url
    receiver.script(
        Reply(200, body='{"code": 0, "message": "OK", "request_id": "2026", "data": {}}')
    )
    planned = TIKTOK.prepare(make_rule(), context())
    result = TIKTOK.send(planned, timeout=5, secrets=Secrets(access_token=TOKEN))

    assert (result.outcome, result.status_code, result.error) == ("delivered", 200, "")
    (got,) = receiver.received
    assert (got.method, got.path, got.query) == ("POST", "/open_api/v1.3/event/track/", {})
    # http.client sends non-Latin-1 text as UTF-8 bytes; http.server reads them as Latin-1.
    assert got.headers["Access-Token"].encode("latin-1").decode("utf-8") == TOKEN
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Idempotency-Key"] == "6f1d0c52-1111-4a2b-9c3d-000000000001"
    assert json.loads(got.body) == json.loads(planned.body)


# --- classification --------------------------------------------------------------------


def answer(code, message="", **extra):
    return json.dumps({"code": code, "message": message, "request_id": "R-1", **extra})


@pytest.mark.parametrize(
    ("status", "body", "outcome", "in_error"),
    [
        (200, answer(0, "OK", data={}), "delivered", ""),
        (200, answer(40001, "No permission to operate pixel"), "failed", "no permission"),
        (200, answer(40002, "Invalid value for event_source_id"), "failed", "invalid parameter"),
        (200, answer(40105, "Access token is incorrect or has been revoked."),
         "failed", "generate a new one"),
        (200, answer(40104, "Access token is empty"), "failed", "missing"),
        (200, answer(40100, "Requests made too frequently"), "retry", "rate limited"),
        (200, answer(40016, "Too many requests"), "retry", "rate limited"),
        (200, answer(50000, "System error"), "retry", "temporary"),
        (200, answer(51001, "Internal service timeout"), "retry", "timeout"),
        (200, answer(60001, "System maintenance"), "retry", "maintenance"),
        (200, answer(41000, "Something new"), "failed", "TikTok error 41000: Something new"),
        (401, answer(40105, "Access token is incorrect"), "failed", "40105"),
        (500, answer(0, "OK"), "retry", "HTTP 500"),
        (200, "<html>gateway</html>", "retry", "without a TikTok code"),
        (200, '{"code": true}', "retry", "without a TikTok code"),
        (200, "", "retry", "without a TikTok code"),
        (429, "", "retry", "HTTP 429"),
        (503, "", "retry", "HTTP 503"),
        (401, "Unauthorized", "failed", "HTTP 401"),
    ],
)  # fmt: skip
def test_classify(status, body, outcome, in_error):
    result = TIKTOK.classify(fake_response(status), body, 9)
    assert (result.outcome, result.status_code, result.duration_ms) == (outcome, status, 9)
    assert result.response_body == body
    assert in_error in result.error
    assert bool(result.error) == (outcome != "delivered")


def test_error_text_quotes_tiktok():
    result = TIKTOK.classify(fake_response(200), answer(40002, "event_time is invalid"), 1)
    assert result.error == (
        "TikTok error 40002: invalid parameter: event_time is invalid [request_id R-1]"
    )


def test_a_rate_limit_reads_retry_after():
    result = TIKTOK.classify(fake_response(200, {"Retry-After": "60"}), answer(40100, "x"), 1)
    assert (result.outcome, result.retry_after) == ("retry", 60.0)


# --- validate --------------------------------------------------------------------------


def test_a_complete_rule_is_valid():
    rule = make_rule(api_version="v1.3", event_names={"sale": "Purchase", "lead": "Lead"})
    assert TIKTOK.validate(rule) == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"account_id": ""}, "account_id", "Enter the TikTok pixel"),
        ({"account_id": "C-1 2"}, "account_id", "letters and digits"),
        ({"access_token": ""}, "access_token", "Enter the TikTok access token"),
        ({"access_token": "ab\tc"}, "access_token", "spaces or line breaks"),
        ({"api_version": "1.3"}, "api_version", "v1.3"),
        ({"event_names": {"sale": None}}, "event_names", "as text"),
    ],
)
def test_validate_refuses_by_field(fields, field, message):
    with pytest.raises(ValidationError) as caught:
        TIKTOK.validate(make_rule(**fields))
    assert list(caught.value.message_dict) == [field]
    assert message in " ".join(caught.value.message_dict[field])


def test_a_custom_event_is_warned():
    warnings = TIKTOK.validate(make_rule(event_names={"sale": "BigSale"}))
    assert warnings == [
        "sale: BigSale is not a TikTok standard event; it is reported as a custom event, "
        "which ads cannot optimise for."
    ]
