"""Transports: classification of answers (fake responses), URL masking, the rule contract
(validate, prepare) and what a real local receiver gets on the wire."""

import json
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest
from django.core.exceptions import ValidationError

from postbacks.masking import mask_secrets
from postbacks.models import PostbackRule
from postbacks.receiver import Reply
from postbacks.transports import (
    SUCCESS_REGEX_MAX_CHARS,
    PreparedRequest,
    S2SPostback,
    parse_retry_after,
    success_regex,
)


def fake_response(status, headers=None):
    return SimpleNamespace(status_code=status, headers=headers or {})


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (204, "delivered"), (408, "retry"), (429, "retry"), (500, "retry"),
     (503, "retry"), (400, "failed"), (404, "failed"), (410, "failed"), (302, "failed")],
)  # fmt: skip
def test_classify(status, outcome):
    result = S2SPostback().classify(fake_response(status, {"Location": "/x"}), "", 12)
    assert (result.outcome, result.status_code, result.duration_ms) == (outcome, status, 12)
    assert bool(result.error) == (outcome != "delivered")


def test_429_reads_retry_after():
    result = S2SPostback().classify(fake_response(429, {"Retry-After": "120"}), "", 1)
    assert result.retry_after == 120


def test_redirect_is_reported_not_followed():
    result = S2SPostback().classify(fake_response(301, {"Location": "https://b/"}), "", 1)
    assert result.error == "HTTP 301: redirect to https://b/ not followed"


@pytest.mark.parametrize(
    ("value", "expected"), [("30", 30.0), ("", None), ("soon", None), (None, None)]
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_mask_hides_secret_parameters_only():
    url = "https://trends.example/api?api_key=SECRET&rc_uuid=abc&amount=2&token=T"
    assert mask_secrets(url) == (
        "https://trends.example/api?api_key=***&rc_uuid=abc&amount=2&token=***"
    )
    assert mask_secrets("https://x/?a=1") == "https://x/?a=1"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("ftp://x/?a={payout}", "http"),
        ("https://{externalid}.example/", "host"),
        ("https://x/?a={payuot}", "Unknown macro {payuot}"),
    ],
)
def test_validate_template_rejects(template, message):
    with pytest.raises(ValidationError, match=message):
        S2SPostback().validate_template(template)


def test_prepare_renders_a_get():
    context = {"externalid": "a&b", "delivery.id": "d-1"}
    prepared = S2SPostback().prepare("https://x/?c={externalid}&d={delivery.id}", context)
    assert (prepared.method, prepared.url) == ("GET", "https://x/?c=a%26b&d=d-1")
    assert prepared.headers == {"Idempotency-Key": "d-1"}


# --- the rule contract: validate and prepare -------------------------------------------

JSON_BODY = '{"click_id": "{externalid}", "value": {payout|0}, "name": "{campaign.name}"}'
TRICKY = 'a "q" & b=c\nline2\x00 ünï ✓ \\ {x}'


def make_rule(**fields) -> PostbackRule:
    fields.setdefault("url_template", "https://pb.example/pb?c={externalid}")
    return PostbackRule(name="Rule", **fields)


def validation_errors(rule: PostbackRule) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        S2SPostback().validate(rule)
    return caught.value.message_dict


def test_a_valid_post_json_rule_has_no_error():
    rule = make_rule(
        http_method="POST",
        body_format="json",
        body_template=JSON_BODY,
        headers_template="Authorization: Bearer {var:token}\r\nX-Source: {trafficsource.name}\n",
        success_mode="regex",
        success_pattern=r'"success"\s*:\s*true',
    )
    assert S2SPostback().validate(rule) == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url_template": "ftp://x/?a={payout}"}, "url_template", "http"),
        ({"url_template": "https://{externalid}.example/"}, "url_template", "host"),
        ({"url_template": "https://x/?a={payuot}"}, "url_template", "did you mean {payout}"),
        ({"url_template": ""}, "url_template", "Enter the destination URL"),
        ({"body_template": "a={externalid}"}, "body_template", "GET request sends no body"),
        ({"body_format": "json"}, "body_format", "GET request sends no body"),
        (
            {"http_method": "POST", "body_template": "a={externalid}"},
            "body_format",
            "form or JSON",
        ),
        (
            {"http_method": "POST", "body_format": "json", "body_template": '{"id": {externalid}}'},
            "body_template",
            "Not valid JSON with sample values filled in: Expecting value (line 1, column 8)",
        ),
        (
            {"http_method": "POST", "body_format": "json", "body_template": '{"a": "{payuot}"}'},
            "body_template",
            "Unknown macro {payuot}",
        ),
        (
            {"http_method": "POST", "body_format": "form", "body_template": "a={externalid} b"},
            "body_template",
            "Unencoded space",
        ),
        ({"headers_template": "Host: evil.example"}, "headers_template", "Line 1: Host is set"),
        ({"headers_template": "\ncontent-length: 5"}, "headers_template", "Line 2: content-length"),
        ({"headers_template": "X Bad: 1"}, "headers_template", "not a valid header name"),
        ({"headers_template": "X-{externalid}: 1"}, "headers_template", "cannot hold a macro"),
        ({"headers_template": "just text"}, "headers_template", "Name: value"),
        ({"headers_template": "X-A: {payuot}"}, "headers_template", "Line 1 (X-A): Unknown"),
        ({"http_method": "PUT"}, "http_method", "Choose GET or POST"),
        ({"http_method": "POST", "body_format": "xml"}, "body_format", "Choose one of none"),
        ({"success_mode": "contains"}, "success_pattern", "Enter the text"),
        ({"success_mode": "regex", "success_pattern": "(["}, "success_pattern", "Not a valid"),
        ({"success_mode": "regex", "success_pattern": "(a+)+$"}, "success_pattern", "nesting"),
    ],
)
def test_validate_rejects_by_field(fields, field, message):
    errors = validation_errors(make_rule(**fields))
    assert message in " ".join(errors[field]), errors


def test_validate_lists_every_error_at_once():
    rule = make_rule(
        url_template="https://x/?a={payuot}",
        body_template="x",
        headers_template="Host: y",
        success_mode="regex",
        success_pattern="(",
    )
    assert set(validation_errors(rule)) == {
        "url_template", "body_template", "headers_template", "success_pattern",
    }  # fmt: skip


def test_missing_externalid_is_warned_once_for_the_whole_request():
    no_id = make_rule(url_template="https://x/pb?p={payout}", headers_template="X-A: {payout}")
    warnings = S2SPostback().validate(no_id)
    assert [w for w in warnings if "{externalid}" in w] == [
        "No {externalid} macro: the traffic source cannot match the conversion to its click."
    ]
    in_body = make_rule(
        url_template="https://x/pb",
        http_method="POST",
        body_format="json",
        body_template='{"id": "{externalid}"}',
    )
    assert S2SPostback().validate(in_body) == []


def test_json_that_breaks_when_a_macro_is_empty_is_warned():
    rule = make_rule(http_method="POST", body_format="json", body_template='{"v": {payout}}')
    (warning,) = S2SPostback().validate(rule)
    assert warning.startswith("Not valid JSON when macros are empty: Expecting value")


def test_validate_template_keeps_the_url_checks():
    S2SPostback().validate_template("https://x/?c={externalid}")
    with pytest.raises(ValidationError, match="did you mean"):
        S2SPostback().validate_template("https://x/?c={externalid}&p={payuot}")


def test_prepare_post_form_escapes_values_and_sets_the_content_type():
    rule = make_rule(
        http_method="POST",
        body_format="form",
        body_template="id={externalid}&p={payout}&raw={param1:raw}\n",
        success_mode="contains",
        success_pattern="OK",
    )
    context = {"externalid": TRICKY, "payout": "2.5", "param1": "a&b", "delivery.id": "d-1"}
    prepared = S2SPostback().prepare(rule, context)
    assert prepared.method == "POST"
    assert prepared.body == (
        "id=a%20%22q%22%20%26%20b%3Dc%0Aline2%00%20%C3%BCn%C3%AF%20%E2%9C%93%20%5C%20%7Bx%7D"
        "&p=2.5&raw=a&b"
    )
    assert parse_qs(prepared.body)["id"] == [TRICKY]
    assert prepared.headers == {
        "Idempotency-Key": "d-1",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    assert (prepared.success_mode, prepared.success_pattern) == ("contains", "OK")


def test_prepare_post_json_escapes_values():
    rule = make_rule(http_method="POST", body_format="json", body_template=JSON_BODY)
    prepared = S2SPostback().prepare(rule, {"externalid": TRICKY, "payout": ""})
    assert json.loads(prepared.body) == {"click_id": TRICKY, "value": 0, "name": ""}
    assert prepared.headers == {"Content-Type": "application/json"}


def test_prepare_headers_cannot_be_split_by_a_value():
    rule = make_rule(
        headers_template="X-Click: id={externalid}\nContent-type: text/plain\nX-Empty: {var1}"
    )
    context = {"externalid": "abc\r\nX-Injected: 1\x00", "delivery.id": "d-1"}
    prepared = S2SPostback().prepare(rule, context)
    assert prepared.headers == {
        "Idempotency-Key": "d-1",
        "X-Click": "id=abcX-Injected: 1",
        "Content-type": "text/plain",
        "X-Empty": "",
    }


def test_prepare_a_get_sends_no_body_and_skips_refused_headers():
    rule = make_rule(body_format="json", body_template='{"a": 1}', headers_template="Host: x")
    prepared = S2SPostback().prepare(rule, {"externalid": "e"})
    assert (prepared.method, prepared.url, prepared.body, prepared.headers) == (
        "GET", "https://pb.example/pb?c=e", "", {},
    )  # fmt: skip
    assert (prepared.success_mode, prepared.success_pattern) == ("status", "")


# --- success beyond 2xx, 410 -------------------------------------------------------------


def classify(status, body, mode="status", pattern=""):
    request = PreparedRequest("GET", "https://x/", success_mode=mode, success_pattern=pattern)
    return S2SPostback().classify(fake_response(status), body, 5, request)


@pytest.mark.parametrize(
    ("mode", "pattern", "body", "outcome", "error"),
    [
        ("contains", '"success":true', '{"success":true}', "delivered", ""),
        (
            "contains",
            '"success":true',
            '{"success": false}',
            "retry",
            'Answer 200 did not contain ""success":true"',
        ),
        ("contains", "OK", "ok", "retry", 'Answer 200 did not contain "OK"'),
        ("regex", r'"success"\s*:\s*true', '{"success": true}', "delivered", ""),
        (
            "regex",
            r'"success"\s*:\s*true',
            '{"success": false}',
            "retry",
            'Answer 200 did not match /"success"\\s*:\\s*true/',
        ),
        ("regex", "(a+)+$", "aaa", "retry", "Answer 200 not checked: The pattern repeats"),
        ("status", "ignored", "anything", "delivered", ""),
    ],
)
def test_success_modes(mode, pattern, body, outcome, error):
    result = classify(200, body, mode, pattern)
    assert (result.outcome, result.status_code, result.response_body) == (outcome, 200, body)
    assert result.error.startswith(error)
    assert bool(result.error) == bool(error)


def test_success_mode_applies_to_2xx_only():
    assert classify(500, '{"success":true}', "contains", "success").outcome == "retry"
    assert classify(404, '{"success":true}', "contains", "success").outcome == "failed"


def test_regex_is_searched_in_the_first_characters_only():
    body = "x" * SUCCESS_REGEX_MAX_CHARS + "OK"
    assert classify(200, body, "regex", "OK").outcome == "retry"
    assert classify(200, body, "contains", "OK").outcome == "delivered"


def test_410_fails_for_good_and_says_gone():
    result = S2SPostback().classify(fake_response(410), "gone", 3)
    assert result.outcome == "failed"
    assert result.error == "HTTP 410 Gone: the destination no longer exists"


@pytest.mark.parametrize("pattern", [r"(\w+\s?)*", "((ab)*)+", "(a|b+)*c", "(?:x+y)+"])
def test_nested_repetitions_are_refused(pattern):
    with pytest.raises(ValueError, match="without nesting"):
        success_regex(pattern)


@pytest.mark.parametrize("pattern", [r'"ok"\s*:\s*1', "(ab)+c", "a{2,5}(b|c)*", r"^\d+$"])
def test_linear_patterns_are_accepted(pattern):
    assert success_regex(pattern).pattern == pattern


# --- on the wire, against a real receiver --------------------------------------------------


def send_rule(receiver, context, **fields):
    fields.setdefault("url_template", receiver.url + "/pb?c={externalid}")
    request = S2SPostback().prepare(make_rule(**fields), context)
    return S2SPostback().send(request, timeout=5)


def test_form_body_arrives_exactly(receiver):
    context = {"externalid": TRICKY, "payout": "2.5", "delivery.id": "d-1"}
    result = send_rule(
        receiver,
        context,
        http_method="POST",
        body_format="form",
        body_template="click_id={externalid}&payout={payout}",
    )
    assert result.outcome == "delivered"
    (got,) = receiver.received
    assert got.method == "POST"
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert got.headers["Idempotency-Key"] == "d-1"
    assert parse_qs(got.body.decode("ascii"), keep_blank_values=True) == {
        "click_id": [TRICKY],
        "payout": ["2.5"],
    }
    assert got.query == {"c": TRICKY}


def test_json_body_arrives_exactly(receiver):
    context = {"externalid": TRICKY, "payout": "2.5", "campaign.name": 'Été "2026"'}
    result = send_rule(
        receiver, context, http_method="POST", body_format="json", body_template=JSON_BODY
    )
    assert result.outcome == "delivered"
    (got,) = receiver.received
    assert got.headers["Content-Type"] == "application/json"
    assert int(got.headers["Content-Length"]) == len(got.body)
    assert json.loads(got.body.decode("utf-8")) == {
        "click_id": TRICKY,
        "value": 2.5,
        "name": 'Été "2026"',
    }


def test_templated_headers_arrive_and_cannot_inject(receiver):
    context = {"externalid": "abc\r\nX-Injected: 1", "campaign.name": "Café ✓"}
    result = send_rule(
        receiver,
        context,
        headers_template="X-Click: {externalid}\nX-Campaign: {campaign.name}\nX-Static: fixed",
    )
    assert result.outcome == "delivered"
    (got,) = receiver.received
    assert got.headers["X-Click"] == "abcX-Injected: 1"
    assert "X-Injected" not in got.headers
    assert got.headers["X-Static"] == "fixed"
    # Non-Latin-1 text goes out as its UTF-8 bytes (http.server reads them as Latin-1).
    assert got.headers["X-Campaign"].encode("latin-1").decode("utf-8") == "Café ✓"


def test_a_200_that_says_false_is_retried(receiver):
    receiver.script(Reply(200, body='{"success": false}'))
    result = send_rule(receiver, {}, success_mode="contains", success_pattern='"success": true')
    assert (result.outcome, result.status_code) == ("retry", 200)
    assert result.error == 'Answer 200 did not contain ""success": true"'
    assert result.response_body == '{"success": false}'


def test_410_over_http_is_a_failure(receiver):
    receiver.script(Reply(410, body="campaign removed"))
    result = send_rule(receiver, {})
    assert (result.outcome, result.status_code) == ("failed", 410)
    assert "410" in result.error
