"""Meta Conversions API: the planned request field by field against Meta's documented format,
the access token added only at sending time, error bodies classified, the rule checks."""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError

from postbacks.models import PostbackRule
from postbacks.receiver import Reply
from postbacks.signing import new_secret
from postbacks.transports import MetaConversionsAPI, Secrets
from postbacks.transports.meta import DEFAULT_VERSION
from tests import factories
from tracker import macros
from tracker.models import Conversion

META = MetaConversionsAPI()
TOKEN = "EAAB+x/y=z&w?v#u %é'\"\\"  # every character that means something in a URL
PIXEL = "1234567890123456"
NOW = int(time.time())
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"


def make_rule(**fields) -> PostbackRule:
    fields.setdefault("kind", "meta_capi")
    fields.setdefault("account_id", PIXEL)
    fields.setdefault("access_token", "EAABtoken")
    fields.setdefault("statuses", ["approved"])
    return PostbackRule(name="Meta", **fields)


def context(**values: str) -> dict[str, str]:
    base = {
        "externalid": "IwAR2F4-dbP0l7Mn1IawQQ",
        "trafficsource.externalid_param": "fbclid",
        "click.timestamp": str(NOW - 3600),
        "ip": "203.0.113.7",
        "user_agent": UA,
        "country": "GB",
        "transaction.id": "T-1",
        "conversion.id": "42",
        "conversion.type": "sale",
        "payout": "2.35",
        "payout_currency": "usd",
        "timestamp": str(NOW - 60),
        "event.type": "conversion",
        "delivery.id": "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a13",
    }
    return {**base, **values}


def event_of(request) -> dict:
    document = json.loads(request.body)
    (event,) = document["data"]
    return event


def fake_response(status, headers=None):
    return SimpleNamespace(status_code=status, headers=headers or {})


# --- the planned request ---------------------------------------------------------------


def test_planned_request_is_metas_documented_format(settings):
    settings.POSTBACKS_META_BASE_URL = "https://graph.example/"
    rule = make_rule(test_event_code="TEST4321", url_template="https://shop.example/thanks")
    request = META.prepare(rule, context())

    assert request.method == "POST"
    assert request.url == f"https://graph.example/{DEFAULT_VERSION}/{PIXEL}/events"
    assert request.headers == {
        "Content-Type": "application/json",
        "Idempotency-Key": "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a13",
    }
    assert json.loads(request.body) == {
        "data": [
            {
                "event_name": "Purchase",
                "event_time": NOW - 60,
                "event_id": "T-1",
                "action_source": "website",
                "event_source_url": "https://shop.example/thanks",
                "user_data": {
                    "fbc": f"fb.1.{(NOW - 3600) * 1000}.IwAR2F4-dbP0l7Mn1IawQQ",
                    "client_ip_address": "203.0.113.7",
                    "client_user_agent": UA,
                    "country": [hashlib.sha256(b"gb").hexdigest()],
                },
                "custom_data": {"value": 2.35, "currency": "USD", "order_id": "T-1"},
            }
        ],
        "test_event_code": "TEST4321",
    }
    assert "EAABtoken" not in request.url + request.body + json.dumps(request.headers)


@pytest.mark.django_db
def test_request_from_a_recorded_click_and_conversion():
    source = factories.traffic_source("Facebook", external_id_param="fbclid")
    click = factories.click(
        factories.campaign(source), external_id="IwAR-real", ip="198.51.100.4", user_agent=UA
    )
    conversion = Conversion.objects.create(
        click=click, txid="ORD-9", dedup_key="t:ORD-9", conversion_type="lead",
        payout=Decimal("12.500000"), currency="EUR",
    )  # fmt: skip
    built = macros.build_context(click, conversion)
    built["delivery.id"] = "d-1"
    event = event_of(META.prepare(make_rule(), built))

    assert event["event_name"] == "Lead"
    assert event["event_time"] == int(conversion.created_at.timestamp())
    assert event["event_id"] == "ORD-9"
    assert event["user_data"]["fbc"].endswith(".IwAR-real")
    assert event["user_data"]["client_ip_address"] == "198.51.100.4"
    assert event["user_data"]["client_user_agent"] == UA
    assert event["custom_data"] == {"value": 12.5, "currency": "EUR", "order_id": "ORD-9"}
    assert "test_event_code" not in json.loads(META.prepare(make_rule(), built).body)


@pytest.mark.parametrize(
    ("values", "fbc"),
    [
        # the external ID is the fbclid when the source's external-ID parameter is fbclid
        ({}, f"fb.1.{(NOW - 3600) * 1000}.IwAR2F4-dbP0l7Mn1IawQQ"),
        # another parameter: the named parameter fbclid, if the source records one
        ({"trafficsource.externalid_param": "click_id", "var:fbclid": "IwAR-var"},
         f"fb.1.{(NOW - 3600) * 1000}.IwAR-var"),
        ({"trafficsource.externalid_param": "click_id"}, None),
        ({"externalid": "", "var:fbclid": ""}, None),
        # a stored _fbc cookie value is sent as it is
        ({"externalid": "fb.1.1700000000000.IwAR-cookie"}, "fb.1.1700000000000.IwAR-cookie"),
        # no click time yet (macro missing): the event's time
        ({"click.timestamp": ""}, f"fb.1.{(NOW - 60) * 1000}.IwAR2F4-dbP0l7Mn1IawQQ"),
    ],
    # Named, not numbered by value: the expected values hold the time of collection, and
    # pytest-xdist workers must collect the same test IDs.
    ids=["fbclid-as-external-id", "named-var", "no-fbclid", "empty", "fbc-cookie", "no-click-time"],
)  # fmt: skip
def test_fbc_comes_from_the_stored_fbclid(values, fbc):
    user = event_of(META.prepare(make_rule(), context(**values)))["user_data"]
    assert user.get("fbc") == fbc


def test_without_the_source_param_macro_the_external_id_is_taken():
    values = context()
    del values["trafficsource.externalid_param"]
    assert event_of(META.prepare(make_rule(), values))["user_data"]["fbc"].endswith(
        ".IwAR2F4-dbP0l7Mn1IawQQ"
    )


@pytest.mark.parametrize(
    ("names", "conversion_type", "event_type", "expected"),
    [
        ({}, "sale", "conversion", "Purchase"),
        ({}, "lead", "conversion", "Lead"),
        ({}, "registration", "conversion", "CompleteRegistration"),
        ({}, "trial", "conversion", "StartTrial"),
        ({}, "deposit", "event", "Purchase"),
        ({}, "SALE", "conversion", "Purchase"),
        ({}, "whatever", "conversion", "Purchase"),
        ({}, "", "click", "ViewContent"),
        ({"sale": "Subscribe"}, "sale", "conversion", "Subscribe"),
        ({"vip": "VipSignup"}, "VIP", "conversion", "VipSignup"),
        ({"*": "Lead"}, "sale", "conversion", "Lead"),
        ({"*": "Lead", "sale": "Purchase"}, "sale", "conversion", "Purchase"),
        ({"sale": ""}, "sale", "conversion", "Purchase"),
        ("not a dict", "lead", "conversion", "Lead"),
    ],
)
def test_event_name_mapping(names, conversion_type, event_type, expected):
    values = context(**{"conversion.type": conversion_type, "event.type": event_type})
    event = event_of(META.prepare(make_rule(event_names=names), values))
    assert event["event_name"] == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, "T-1"),
        ({"transaction.id": ""}, "conversion-42"),
        ({"transaction.id": "", "conversion.id": "", "click.id": "c-uuid"}, "click-c-uuid"),
        ({"transaction.id": "", "conversion.id": ""}, "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a13"),
    ],
)
def test_event_id_is_stable_and_shared_with_the_browser_pixel(values, expected):
    first = META.prepare(make_rule(), context(**values))
    again = META.prepare(make_rule(), context(**values))
    assert event_of(first)["event_id"] == event_of(again)["event_id"] == expected


def test_event_time_too_old_when_planned_becomes_the_planning_time():
    old = context(timestamp=str(NOW - 8 * 86400))
    assert abs(event_of(META.prepare(make_rule(), old))["event_time"] - time.time()) < 5
    missing = context(timestamp="")
    assert abs(event_of(META.prepare(make_rule(), missing))["event_time"] - time.time()) < 5


def test_api_version_and_base_url(settings):
    settings.POSTBACKS_META_BASE_URL = "http://proxy.local:8080/graph"
    request = META.prepare(make_rule(api_version="v23.0"), context())
    assert request.url == f"http://proxy.local:8080/graph/v23.0/{PIXEL}/events"


def test_what_is_not_known_is_left_out():
    bare = {"timestamp": str(NOW), "delivery.id": "d"}
    event = event_of(META.prepare(make_rule(), bare))
    assert event == {
        "event_name": "Purchase",
        "event_time": NOW,
        "event_id": "d",
        "action_source": "website",
        "user_data": {},
    }


@pytest.mark.parametrize("payout", ["NaN", "Infinity", "-inf", "1e999999", "abc", "", " "])
def test_a_payout_that_is_not_a_json_number_is_left_out(payout):
    request = META.prepare(make_rule(), context(payout=payout))

    def refuse(name):
        raise AssertionError(f"{name} in the body")

    event = json.loads(request.body, parse_constant=refuse)["data"][0]
    assert "value" not in event["custom_data"]


def test_huge_nul_and_broken_values_stay_valid_json():
    evil = '\x00"}\\\n\u2028' + "\ud800" + "é" * 200_000
    values = context(user_agent=evil, externalid=evil, **{"transaction.id": evil})
    request = META.prepare(make_rule(url_template="https://x.example/?p={txid}"), values)
    event = event_of(request)  # parses
    cleaned = evil.replace("\ud800", "?")
    assert event["user_data"]["client_user_agent"] == cleaned
    assert event["event_id"] == cleaned
    assert event["user_data"]["fbc"].endswith("." + cleaned)
    assert event["event_source_url"].startswith("https://x.example/?p=%00%22%7D%5C%0A")
    request.body.encode("utf-8")  # no lone surrogate left


# --- sending: the token ----------------------------------------------------------------


def test_authorize_adds_the_token_to_the_sent_request_only():
    planned = META.prepare(make_rule(), context())
    sent = META.authorize(planned, Secrets(access_token=TOKEN))
    assert planned.url == META.prepare(make_rule(), context()).url  # untouched
    assert "access_token" not in planned.url
    query = parse_qs(urlsplit(sent.url).query)
    assert query == {"access_token": [TOKEN]}
    assert sent.body == planned.body and sent.headers == planned.headers


def test_authorize_keeps_signing():
    planned = META.prepare(make_rule(), context())
    sent = META.authorize(planned, Secrets(signing=(new_secret(),), access_token="t"))
    assert sent.headers["webhook-id"] == planned.headers["Idempotency-Key"]
    assert sent.headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    ("token", "message"),
    [("", "no access token"), ("  ", "no access token"), ("a\r\nb", "control characters")],
)
def test_authorize_refuses_an_unusable_token(token, message):
    with pytest.raises(ValueError, match=message):
        META.authorize(META.prepare(make_rule(), context()), Secrets(access_token=token))


def test_an_event_past_metas_7_days_is_not_sent(receiver, settings):
    settings.POSTBACKS_META_BASE_URL = receiver.url
    planned = META.prepare(make_rule(), context())
    document = json.loads(planned.body)
    document["data"][0]["event_time"] = NOW - 7 * 86400 - 60
    planned.body = json.dumps(document)
    result = META.send(planned, timeout=5, secrets=Secrets(access_token="t"))
    assert result.outcome == "failed"
    assert "7.0 days old: Meta refuses events more than 7 days old" in result.error
    assert receiver.received == []


def test_the_request_on_the_wire(receiver, settings):
    settings.POSTBACKS_META_BASE_URL = receiver.url
    receiver.script(Reply(200, body='{"events_received":1,"messages":[],"fbtrace_id":"A1"}'))
    planned = META.prepare(make_rule(test_event_code="TEST1"), context())
    result = META.send(planned, timeout=5, secrets=Secrets(access_token=TOKEN))

    assert (result.outcome, result.status_code, result.error) == ("delivered", 200, "")
    (got,) = receiver.received
    assert got.method == "POST"
    assert urlsplit(got.path).path == f"/{DEFAULT_VERSION}/{PIXEL}/events"
    assert got.query == {"access_token": TOKEN}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Idempotency-Key"] == "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a13"
    assert json.loads(got.body) == json.loads(planned.body)
    assert TOKEN not in got.body.decode()


def test_an_error_quoting_the_url_does_not_show_the_token(settings):
    settings.POSTBACKS_META_BASE_URL = "http://127.0.0.1:9"  # nothing listens (discard)
    settings.POSTBACKS_MASK_PARAMS = []  # even without masking configured
    result = META.send(
        META.prepare(make_rule(), context()), timeout=2, secrets=Secrets(access_token="SeCrEt99")
    )
    assert result.outcome == "retry"
    assert "access_token=***" in result.error  # requests quotes the URL it failed on
    assert "SeCrEt99" not in result.error


# --- classification --------------------------------------------------------------------


def graph_error(code, message="", subcode=None, kind="OAuthException", **extra):
    error = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbC123"}
    if subcode:
        error["error_subcode"] = subcode
    return json.dumps({"error": {**error, **extra}})


@pytest.mark.parametrize(
    ("status", "body", "outcome", "in_error"),
    [
        (200, '{"events_received": 1, "messages": [], "fbtrace_id": "A"}', "delivered", ""),
        (200, '{"events_received": 0, "messages": []}', "retry", "without events_received"),
        (200, "<html>proxy</html>", "retry", "without events_received"),
        (400, graph_error(190, "Error validating access token: Session has expired", 463),
         "failed", "access token is invalid or expired"),
        (400, graph_error(190, "Invalid OAuth access token - Cannot parse access token"),
         "failed", "Meta error 190 (OAuthException)"),
        (200, graph_error(190, "Malformed access token"), "failed", "190"),
        (403, graph_error(10, "Application does not have permission for this action"),
         "failed", "no permission"),
        (403, graph_error(200, "Permissions error"), "failed", "no permission"),
        (400, graph_error(100, "Invalid parameter", 2804003, error_user_title="Event Timestamp "
         "Too Old", error_user_msg="The timestamp for this event is too far in the past."),
         "failed", "Event Timestamp Too Old"),
        (400, graph_error(4, "Application request limit reached", is_transient=True),
         "retry", "rate limited"),
        (400, graph_error(17, "User request limit reached"), "retry", "rate limited"),
        (400, graph_error(32, "Page request limit reached"), "retry", "rate limited"),
        (400, graph_error(613, "Calls to this api have exceeded the rate limit."), "retry", ""),
        (400, graph_error(80004, "There have been too many calls to this ad-account."),
         "retry", "ad account"),
        (500, graph_error(1, "An unknown error occurred", kind="FacebookApiException",
         is_transient=True), "retry", "temporary"),
        (503, graph_error(2, "Service temporarily unavailable"), "retry", "temporary"),
        (400, graph_error(99999, "Something new", is_transient=True), "retry", "99999"),
        (400, graph_error(99999, "Something new"), "failed", "99999"),
        (500, graph_error(99999, "Something new"), "retry", "99999"),
        (429, "", "retry", "HTTP 429"),
        (502, "<html>Bad gateway</html>", "retry", "HTTP 502"),
        (404, "<html>Not found</html>", "failed", "HTTP 404"),
        (400, '{"error": "not a dict"}', "failed", "HTTP 400"),
        (400, '{"error": {"code": [190], "message": "odd"}}', "failed", "Meta error [190]"),
        (500, '{"error": {"code": true}}', "retry", "Meta error True"),
        (200, '{"events_received": true}', "retry", "without events_received"),
        (200, '{"events_received": "1"}', "retry", "without events_received"),
    ],
)  # fmt: skip
def test_classify(status, body, outcome, in_error):
    result = META.classify(fake_response(status), body, 7)
    assert (result.outcome, result.status_code, result.duration_ms) == (outcome, status, 7)
    assert result.response_body == body
    assert in_error in result.error
    assert bool(result.error) == (outcome != "delivered")


def test_error_text_names_code_subcode_and_trace():
    result = META.classify(fake_response(400), graph_error(190, "Session has expired", 463), 1)
    assert result.error == (
        "Meta error 190/463 (OAuthException): the access token is invalid or expired: generate "
        "a new one in Events Manager: Session has expired [fbtrace_id AbC123]"
    )


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({}, None),
        ({"Retry-After": "30"}, 30.0),
        ({"X-Business-Use-Case-Usage": json.dumps({"123": [
            {"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 5},
            {"type": "custom_audience", "estimated_time_to_regain_access": 2},
        ]})}, 300.0),
        ({"X-Business-Use-Case-Usage": "not json", "Retry-After": "9"}, 9.0),
    ],
)  # fmt: skip
def test_a_rate_limit_waits_what_meta_says(headers, wait):
    result = META.classify(fake_response(400, headers), graph_error(80004, "Too many calls"), 1)
    assert result.outcome == "retry"
    assert result.retry_after == wait


def test_a_429_without_body_reads_retry_after():
    result = META.classify(fake_response(429, {"Retry-After": "120"}), "", 1)
    assert (result.outcome, result.retry_after) == ("retry", 120.0)


# --- validate --------------------------------------------------------------------------


def test_a_complete_rule_is_valid():
    rule = make_rule(
        api_version="v24.0", event_names={"sale": "Purchase", "*": "Lead"},
        url_template="https://shop.example/thanks?c={click.id}",
    )  # fmt: skip
    assert META.validate(rule) == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"account_id": ""}, "account_id", "Enter the Meta pixel"),
        ({"account_id": "px-123"}, "account_id", "digits only"),
        ({"access_token": ""}, "access_token", "Enter the Meta access token"),
        ({"access_token": "   "}, "access_token", "Enter the Meta access token"),
        ({"access_token": "EAA B"}, "access_token", "spaces or line breaks"),
        ({"access_token": "EAA\nB"}, "access_token", "spaces or line breaks"),
        ({"api_version": "25.0"}, "api_version", "v25.0"),
        ({"api_version": "v25"}, "api_version", "v25.0"),
        ({"test_event_code": "TEST 1"}, "test_event_code", "without spaces"),
        ({"event_names": ["Purchase"]}, "event_names", "JSON object"),
        ({"event_names": {"sale": 3}}, "event_names", "as text"),
        ({"event_names": {"sale": ""}}, "event_names", "as text"),
        ({"event_names": {"": "Lead"}}, "event_names", "conversion type"),
        ({"event_names": {"sale": "P" * 51}}, "event_names", "at most 50"),
        ({"event_names": {"sale": "Pur\nchase"}}, "event_names", "line breaks"),
        ({"url_template": "ftp://shop.example/"}, "url_template", "http"),
        ({"url_template": "https://x.example/?c={clik.id}"}, "url_template", "Unknown macro"),
        ({"url_template": "https://x.example/?s={var:site}"}, "url_template", "custom variable"),
    ],
)
def test_validate_refuses_by_field(fields, field, message):
    with pytest.raises(ValidationError) as caught:
        META.validate(make_rule(**fields), known_vars={"sub1"})
    assert list(caught.value.message_dict) == [field]
    assert message in " ".join(caught.value.message_dict[field])


def test_validate_lists_every_error_at_once():
    rule = make_rule(account_id="x", access_token="", api_version="1", event_names="x")
    with pytest.raises(ValidationError) as caught:
        META.validate(rule)
    assert set(caught.value.message_dict) == {
        "account_id", "access_token", "api_version", "event_names"
    }  # fmt: skip


def test_a_stored_token_is_only_checked_for_presence():
    assert META.validate(make_rule(access_token="EAAB" + "x" * 400)) == []


@pytest.mark.parametrize(
    ("fields", "warning"),
    [
        ({"test_event_code": "TEST123"}, "Test Events tool"),
        ({"event_names": {"sale": "BigSale"}}, "BigSale is not a Meta standard event"),
        ({"statuses": []}, "not rejected or refunded"),
        ({"statuses": ["approved", "refunded"]}, "not rejected or refunded"),
        ({"delay_seconds": 7 * 86400}, "more than 7 days old"),
        ({"event_type": "impression"}, 'receives it as "Purchase"'),
    ],
)
def test_validate_warns(fields, warning):
    warnings = META.validate(make_rule(**fields))
    assert any(warning in w for w in warnings), warnings


def test_validate_template_accepts_a_blank_page_url():
    META.validate_template("")
    META.validate_template("https://shop.example/?c={click.id}")
    with pytest.raises(ValidationError, match="Unknown macro"):
        META.validate_template("https://shop.example/?c={clik}")
