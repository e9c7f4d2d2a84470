"""The CRM webhook transport: the field mapping (grammar, types, validation by line), the
standard payload of a real conversion, the request it plans, and what a real local
receiver gets on the wire, answers included."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from postbacks.models import PostbackRule
from postbacks.preview import sample_context
from postbacks.receiver import Reply
from postbacks.transports import CrmWebhook, Outcome, get_transport
from postbacks.transports.webhook import Number, dumps, parse_mapping, to_number
from tests import factories
from tracker import services
from tracker.macros import build_context

DELIVERY_ID = "6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f"


def make_rule(**fields) -> PostbackRule:
    fields.setdefault("url_template", "https://crm.example/hook")
    fields.setdefault("signing_secret", "whsec_" + "A" * 44)
    return PostbackRule(name="CRM", kind="webhook", **fields)


def errors_of(rule: PostbackRule) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        CrmWebhook().validate(rule)
    return caught.value.message_dict


def context(**values: str) -> dict[str, str]:
    base = sample_context(make_rule())
    base.update(values)
    return base


def payload(rule: PostbackRule, ctx: dict[str, str]) -> dict:
    return json.loads(CrmWebhook().prepare(rule, ctx).body)


def test_registered_under_its_kind():
    assert isinstance(get_transport("webhook"), CrmWebhook)


# --- the request ----------------------------------------------------------------------


def test_the_request_is_a_json_post_with_the_delivery_id_whatever_the_method_field():
    rule = make_rule(
        url_template="https://crm.example/hook?src={trafficsource.name}&c={externalid}",
        http_method="GET",
        body_format="form",
        body_template="ignored={payout}",
        headers_template="Authorization: Bearer k-{campaign.id}\nX-Lead: {externalid}",
        success_mode="contains",
        success_pattern="accepted",
    )
    prepared = CrmWebhook().prepare(rule, context(externalid="a b&c"))
    assert prepared.method == "POST"
    assert prepared.url == "https://crm.example/hook?src=Taboola&c=a%20b%26c"
    assert prepared.headers == {
        "Content-Type": "application/json",
        "Idempotency-Key": "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a13",
        "webhook-id": "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a13",
        "Authorization": "Bearer k-7",
        "X-Lead": "a b&c",
    }
    assert json.loads(prepared.body)["type"] == "conversion.created"
    assert (prepared.success_mode, prepared.success_pattern) == ("contains", "accepted")


def test_header_values_cannot_add_headers_and_reserved_names_are_never_sent():
    rule = make_rule(
        headers_template="X-Lead: {externalid}\nwebhook-signature: forged\nContent-Type: text/xml"
    )
    prepared = CrmWebhook().prepare(rule, context(externalid="a\r\nX-Evil: 1\x00"))
    assert prepared.headers["X-Lead"] == "aX-Evil: 1"
    assert "webhook-signature" not in prepared.headers
    assert prepared.headers["Content-Type"] == "application/json"


def test_the_body_is_compact_json_with_exact_numbers():
    rule = make_rule(field_mapping="a:number = {payout}\nb = x")
    body = CrmWebhook().prepare(rule, context(payout="1234567890.123456")).body
    assert body == '{"a":1234567890.123456,"b":"x"}'


# --- the standard payload -------------------------------------------------------------


@pytest.mark.django_db
def test_standard_payload_of_a_real_conversion_field_by_field():
    source = factories.traffic_source("Outbrain")
    offer = factories.offer("Loans", payout=Decimal("1.50"))
    campaign = factories.campaign(source, offer, name="Spring")
    click = factories.click(campaign, external_id="00123", var1="site-9", ip="198.51.100.4")
    conversion = services.conversion_create(
        click,
        payout=Decimal("12.300000"),
        currency="EUR",
        txid="T-77",
        conversion_type="lead",
        status="rejected",
        rejection_reason="Fraud",
        params={"param3": "p3"},
    )
    ctx = build_context(click, conversion, previous_status="pending")
    ctx["delivery.id"] = DELIVERY_ID
    assert payload(make_rule(), ctx) == {
        "type": "conversion.status_changed",
        "timestamp": conversion.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "delivery_id": DELIVERY_ID,
        "conversion": {
            "id": conversion.pk,
            "txid": "T-77",
            "type": "lead",
            "status": "rejected",
            "previous_status": "pending",
            "rejection_reason": "fraud",
            "rejection_reason_label": "Fraud suspected",
            "payout": 12.3,
            "currency": "EUR",
            "params": {"param3": "p3"},
        },
        "click": {
            "id": str(click.pk),
            "time": int(click.created_at.timestamp()),
            "external_id": "00123",  # digits, still a string
            "ip": "198.51.100.4",
            "user_agent": None,
            "referrer": None,
            "country": None,
            "country_name": None,
            "region": None,
            "city": None,
            "device": None,
            "os": None,
            "os_version": None,
            "browser": None,
            "browser_version": None,
            "brand": None,
            "model": None,
            "language": None,
            "isp": None,
            "asn": None,
            "carrier": None,
            "connection_type": None,
            "is_bot": False,
            "lander_id": None,
            "vars": {"var1": "site-9"},
            "parameters": {"site": "site-9"},
        },
        "campaign": {"id": campaign.pk, "name": "Spring"},
        "offer": {"id": offer.pk, "name": "Loans"},
        "traffic_source": {"id": source.pk, "name": "Outbrain"},
        # The network's name only when already loaded (build_context never queries).
        "affiliate_network": {"id": offer.affiliate_network_id, "name": None},
    }


def test_standard_payload_types_and_event_names():
    body = payload(make_rule(), context())
    assert body["conversion"]["payout"] == 2.5 and body["conversion"]["id"] == 1001
    assert body["click"]["is_bot"] is False and body["click"]["asn"] == 25135
    assert payload(make_rule(), context(**{"event.type": "event"}))["type"] == "conversion.created"
    click_ctx = {name: "" for name in context()} | {"event.type": "click", "click.id": "c-1"}
    click_body = payload(make_rule(), click_ctx)
    assert (click_body["type"], click_body["conversion"], click_body["click"]["id"]) == (
        "click.created",
        None,
        "c-1",
    )
    assert click_body["offer"] is None and click_body["affiliate_network"] is None
    shown = payload(make_rule(), {"event.type": "impression", "externalid": "e"})
    assert shown["type"] == "impression.created"
    assert "click" not in shown and "id" not in shown["impression"]
    assert shown["impression"]["external_id"] == "e"


def test_a_mapping_of_comments_only_sends_the_standard_payload():
    assert "conversion" in payload(make_rule(field_mapping="# nothing yet\n\n"), context())


# --- the field mapping ----------------------------------------------------------------

MAPPING = (
    """
# lead fields for the CRM
event = {event.type}
lead.id:number = {conversion.id}
lead.payout:number = {payout}
lead.status = {status}
lead.reason:nullable = {rejection_reason}
lead.bot:boolean = {is_bot}
lead.source.name = tracker {trafficsource.name}
constant = 42
"""
    + "   spaced.key   =   value with = sign   \n"
)


def test_mapping_nests_types_and_keeps_order():
    body = payload(make_rule(field_mapping=MAPPING), context())
    assert body == {
        "event": "conversion",
        "lead": {
            "id": 1001,
            "payout": 2.5,
            "status": "approved",
            "reason": None,
            "bot": False,
            "source": {"name": "tracker Taboola"},
        },
        "constant": "42",
        "spaced": {"key": "value with = sign"},
    }
    assert list(body) == ["event", "lead", "constant", "spaced"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.350000", "2.35"), ("-0", "0"), ("1e3", "1000"), ("0.000001", "0.000001"),
        ("007", "7"), ("+5", "5"), (".5", "0.5"), ("", None), ("abc", None), ("NaN", None),
        ("Infinity", None), ("1e999999", None), ("1,5", None), ("1_000", None),
        ("2.35 ", None), ("9" * 70, None),
    ],
)  # fmt: skip
def test_to_number(text, expected):
    assert to_number(text) == expected


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("1", "boolean", True), ("YES", "boolean", True), ("off", "boolean", False),
        ("", "boolean", None), ("maybe", "boolean", None), ("", "nullable", None),
        (" ", "nullable", None), ("x", "nullable", "x"), ("", "string", ""),
        ("abc", "number", None), (" 3 ", "number", 3),
    ],
)  # fmt: skip
def test_typed_values(value, kind, expected):
    body = payload(make_rule(field_mapping=f"v:{kind} = {{param1}}"), context(param1=value))
    assert body == {"v": expected}


def test_hostile_values_stay_inside_their_strings():
    tricky = '", "admin": true, "x": "\\ \x00\x1f \u2028 ✓ \ud800'
    rule = make_rule(field_mapping="a = {externalid}\nb:nullable = {user_agent}")
    body = CrmWebhook().prepare(rule, context(externalid=tricky, user_agent="U" * 100_000)).body
    parsed = json.loads(body)
    assert list(parsed) == ["a", "b"]
    assert parsed["a"] == tricky.replace("\ud800", "?")
    assert len(parsed["b"]) == 100_000
    assert "\x00" not in body and "\\u0000" in body
    body.encode("utf-8")  # no lone surrogate left: the bytes sent are the text signed


def test_dumps_refuses_what_it_cannot_write_exactly():
    assert dumps({"n": Number("1.5"), "t": True, "z": None}) == '{"n":1.5,"t":true,"z":null}'
    with pytest.raises(TypeError):
        dumps({"f": 1.5})


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("no equals sign", "Line 1: write key = value"),
        ("\n\nbad key = 1", "Line 3: 'bad key' is not a key"),
        ("a..b = 1", "'a..b' is not a key"),
        (".a = 1", "'.a' is not a key"),
        ("= 1", "'' is not a key"),
        ("a:int = 1", "Line 1: unknown type :int"),
        ("a = 1\na = 2", "Line 2: a is already given on line 1."),
        ("a = 1\na.b = 2", "Line 2: a.b nests under a, a value on line 1."),
        ("a.b = 1\na = 2", "Line 2: a is an object on line 1 (a.b)."),
        ("a.b.c = 1\na.b:number = 2", "Line 2: a.b is an object on line 1 (a.b.c)."),
        (".".join("k" * 9) + " = 1", "nests more than 8 levels"),
        ("a = {payuot}", "Line 1: Unknown macro {payuot}; did you mean {payout}?"),
        ("# c\na = {status:approved=1,=0}", "Line 2: Malformed mapping"),
        ("a = {var:nope}", "Line 1: Unknown custom variable {var:nope}"),
        ("\n".join(f"k{i} = 1" for i in range(201)), "Line 201: at most 200 fields."),
    ],
)
def test_mapping_errors_name_the_line(mapping, message):
    rule = make_rule(field_mapping=mapping)
    with pytest.raises(ValidationError) as caught:
        CrmWebhook().validate(rule, known_vars={"site"})
    assert message in " ".join(caught.value.message_dict["field_mapping"])


def test_mapping_errors_come_in_line_order_with_every_other_field():
    rule = make_rule(
        url_template="ftp://crm.example/",
        field_mapping="a = {payuot}\nb\nc:int = 1",
        headers_template="webhook-id: mine\nX-A: {nope}",
        success_mode="regex",
        success_pattern="(a+)+",
    )
    errors = errors_of(rule)
    assert set(errors) == {"url_template", "field_mapping", "headers_template", "success_pattern"}
    assert [m.split(":")[0] for m in errors["field_mapping"]] == ["Line 1", "Line 2", "Line 3"]
    assert errors["headers_template"][0] == (
        "Line 1: webhook-id is set by the CRM webhook and cannot be templated."
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://crm.example/", "http"),
        ("https://{externalid}.example/", "host"),
        ("https://crm.example/?a={payuot}", "did you mean {payout}"),
        ("https://crm.example/a b", "Unencoded space"),
        ("", "Enter the destination URL"),
    ],
)
def test_url_checks_are_the_s2s_ones(url, message):
    assert message in " ".join(errors_of(make_rule(url_template=url))["url_template"])


def test_a_valid_rule_warns_only_about_what_is_worth_knowing():
    rule = make_rule(field_mapping=MAPPING, headers_template="X-A: {campaign.name}")
    assert CrmWebhook().validate(rule) == []  # no {externalid} nagging for a CRM
    loose = make_rule(
        url_template="http://crm.example/",
        signing_secret="",
        body_template='{"x": 1}',
        field_mapping="old = {campaign.cpa}",
        headers_template="Idempotency-Key: {click.id}",
    )
    warnings = " ".join(CrmWebhook().validate(loose))
    for expected in (
        "prefer https://",
        "Not signed",
        "body template is not used",
        "{campaign.cpa} is deprecated",
        "replaces the delivery ID",
    ):
        assert expected in warnings


def test_a_huge_mapping_is_refused_quickly():
    huge = "\n".join(f"a{i}.b = {{payout}}" for i in range(100_000))
    started = time.monotonic()
    fields, errors = parse_mapping(huge)
    assert len(fields) == 200 and errors == ["Line 201: at most 200 fields."]
    assert time.monotonic() - started < 1


def test_parse_mapping_never_raises_on_junk():
    fields, errors = parse_mapping("\x00 = \ud800\n=\n:\n{}={}\n a:b:c = d")
    assert fields == []
    assert [e.split(":")[0] for e in errors] == [f"Line {n}" for n in range(1, 6)]
    assert errors[4] == "Line 5: unknown type :b:c; use :number, :boolean or :nullable."


# --- on the wire: a real receiver -----------------------------------------------------


def send(receiver, reply: Reply, timeout: float = 5.0, **fields):
    receiver.script(reply)
    rule = make_rule(url_template=receiver.url + "/crm?c={externalid}", **fields)
    prepared = CrmWebhook().prepare(rule, context(externalid="e-1"))
    return prepared, CrmWebhook().send(prepared, timeout=timeout)


def test_what_the_receiver_gets(receiver):
    prepared, result = send(receiver, Reply(201, body="created"), field_mapping="id = {externalid}")
    assert (result.outcome, result.status_code) == (Outcome.DELIVERED, 201)
    (got,) = receiver.received
    assert (got.method, got.path, got.body) == ("POST", "/crm?c=e-1", b'{"id":"e-1"}')
    assert got.headers["Content-Type"] == "application/json"
    assert (
        got.headers["webhook-id"]
        == got.headers["Idempotency-Key"]
        == prepared.headers["webhook-id"]
    )
    assert "webhook-signature" not in got.headers  # no secrets given: unsigned


@pytest.mark.parametrize(
    ("reply", "outcome", "error"),
    [
        (Reply(500, body="down"), Outcome.RETRY, "HTTP 500"),
        (Reply(429, headers={"Retry-After": "30"}), Outcome.RETRY, "HTTP 429"),
        (Reply(410, body="gone"), Outcome.FAILED, "410 Gone"),
        (Reply(400, body='{"error": "bad lead"}'), Outcome.FAILED, "HTTP 400"),
        (Reply(302, headers={"Location": "/x"}), Outcome.FAILED, "not followed"),
    ],
)
def test_answers_are_classified(receiver, reply, outcome, error):
    _prepared, result = send(receiver, reply)
    assert result.outcome == outcome and error in result.error
    if reply.status == 429:
        assert result.retry_after == 30


def test_a_200_with_an_error_body_is_retried_under_a_success_rule(receiver):
    _p, result = send(
        receiver,
        Reply(200, body='{"ok": false, "error": "duplicate"}'),
        success_mode="contains",
        success_pattern='"ok": true',
    )
    assert (result.outcome, result.status_code) == (Outcome.RETRY, 200)
    assert "did not contain" in result.error
    assert result.response_body == '{"ok": false, "error": "duplicate"}'


def test_a_slow_crm_times_out_and_is_retried(receiver):
    _p, result = send(receiver, Reply(200, delay=2.0), timeout=0.5)
    assert result.outcome == Outcome.RETRY and result.error.startswith("Timeout")
