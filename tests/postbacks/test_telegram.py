"""Telegram message: the planned request (no token), the request on the wire (token in the
path only then), classification of Telegram's documented answers, and validation."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from postbacks.masking import mask_secrets
from postbacks.models import PostbackRule
from postbacks.receiver import Reply
from postbacks.signing import new_secret
from postbacks.transports import Secrets, TelegramMessage
from postbacks.transports.telegram import DEFAULT_TEMPLATE, TEXT_MAX, message_text
from tracker import macros

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw-_"
SECRETS = Secrets(access_token=TOKEN)
BASE = "https://api.telegram.org"
CONTEXT = {
    "status": "approved",
    "conversion.type": "lead",
    "payout": "2.35",
    "payout_currency": "USD",
    "campaign.name": "Spring",
    "offer.name": "VPN",
    "click.id": "3f1c",
    "externalid": "tbl-1",
    "delivery.id": "d-1",
}
OK = json.dumps({"ok": True, "result": {"message_id": 7, "chat": {"id": -1001}, "text": "x"}})


def make_rule(**fields) -> PostbackRule:
    fields.setdefault("access_token", TOKEN)
    fields.setdefault("account_id", "-1001234567890")
    fields.setdefault("url_template", "")
    return PostbackRule(name="Chat", kind="telegram", **fields)


def body_of(request) -> dict:
    return json.loads(request.body)


@pytest.fixture
def telegram_base(settings):
    settings.POSTBACKS_TELEGRAM_BASE_URL = BASE + "/"
    return settings


# --- prepare: the planned request -----------------------------------------------------------


def test_the_planned_request_holds_no_token(telegram_base):
    request = TelegramMessage().prepare(make_rule(body_template="New {conversion.type}"), CONTEXT)

    assert (request.method, request.url) == ("POST", f"{BASE}/bot***/sendMessage")
    assert request.headers == {"Content-Type": "application/json", "Idempotency-Key": "d-1"}
    assert body_of(request) == {
        "chat_id": -1001234567890,
        "text": "New lead",
        "link_preview_options": {"is_disabled": True},
    }
    assert TOKEN not in request.url + request.body + json.dumps(request.headers)
    assert TOKEN.split(":")[1] not in request.url + request.body


def test_a_channel_username_is_sent_as_text(telegram_base):
    request = TelegramMessage().prepare(make_rule(account_id=" @deals_feed "), CONTEXT)
    assert body_of(request)["chat_id"] == "@deals_feed"


def test_the_default_message(telegram_base):
    request = TelegramMessage().prepare(make_rule(), CONTEXT)
    assert body_of(request)["text"] == "✅ lead 2.35 USD — Spring / VPN, click 3f1c"
    assert macros.validate(DEFAULT_TEMPLATE, context="none")[0] == []


@pytest.mark.parametrize(
    ("status", "sign"), [("pending", "⏳"), ("rejected", "❌"), ("refunded", "↩️")]
)
def test_the_default_message_shows_the_status(status, sign):
    assert message_text("", {**CONTEXT, "status": status}).startswith(f"{sign} lead 2.35")


def test_values_are_plain_text_and_cannot_break_the_json(telegram_base):
    tricky = '<b>x</b> *y* _z_ "q" \\ é 😀\x00\x07\r\n{payout}'
    rule = make_rule(body_template="Click {externalid}\n\tpaid {payout}")
    request = TelegramMessage().prepare(rule, {**CONTEXT, "externalid": tricky})

    body = body_of(request)
    assert body["text"] == 'Click <b>x</b> *y* _z_ "q" \\ é 😀\n{payout}\n\tpaid 2.35'
    assert "parse_mode" not in body
    assert "\x00" not in request.body


def test_a_huge_value_is_cut_at_telegrams_limit(telegram_base):
    rule = make_rule(body_template="{externalid}")
    request = TelegramMessage().prepare(rule, {**CONTEXT, "externalid": "😀" * 1_000_000})

    text = body_of(request)["text"]
    assert text.endswith("😀…")
    assert len(text.encode("utf-16-le")) // 2 == TEXT_MAX - 1  # 2047 pairs + "…"
    text.encode("utf-8")  # no lone surrogate: a pair was never split


def test_a_long_ascii_text_is_exactly_4096_characters():
    text = message_text("x" * 10_000, {})
    assert (len(text), text[-1]) == (TEXT_MAX, "…")
    assert message_text("y" * TEXT_MAX, {}) == "y" * TEXT_MAX


def test_a_template_rendering_nothing_sends_the_default_message():
    assert message_text("{param1}  \n", CONTEXT) == message_text("", CONTEXT)


# --- on the wire, against a real receiver --------------------------------------------------


def send(receiver, settings, rule=None, secrets=SECRETS, timeout=5.0):
    settings.POSTBACKS_TELEGRAM_BASE_URL = receiver.url
    transport = TelegramMessage()
    request = transport.prepare(rule or make_rule(body_template="Lead {externalid}"), CONTEXT)
    return request, transport.send(request, timeout=timeout, secrets=secrets)


def test_the_token_goes_in_the_path_only_on_the_wire(receiver, settings):
    receiver.script(Reply(200, body=OK, content_type="application/json"))
    request, result = send(receiver, settings)

    assert result.outcome == "delivered", result.error
    (got,) = receiver.received
    assert (got.method, got.path) == ("POST", f"/bot{TOKEN}/sendMessage")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Idempotency-Key"] == "d-1"
    assert "webhook-signature" not in got.headers
    assert json.loads(got.body) == {
        "chat_id": -1001234567890,
        "text": "Lead tbl-1",
        "link_preview_options": {"is_disabled": True},
    }
    assert request.url == f"{receiver.url}/bot***/sendMessage"
    assert mask_secrets(f"{receiver.url}{got.path}") == request.url


def test_a_signing_secret_still_signs(receiver, settings):
    receiver.script(Reply(200, body=OK))
    _request, result = send(
        receiver, settings, secrets=Secrets(signing=(new_secret(),), access_token=TOKEN)
    )
    assert result.outcome == "delivered"
    (got,) = receiver.received
    assert got.headers["webhook-id"] == "d-1"
    assert got.headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("", "Not sent: no bot token"),
        ("   ", "Not sent: no bot token"),
        ("123:abc/../../getMe?x=", "Not sent: the bot token is not"),
        ("123:ab c", "Not sent: the bot token is not"),
        ("123:abc\r\nX-Evil: 1", "Not sent: the bot token is not"),
        ("bot123:abc", "Not sent: the bot token is not"),
        ("123:abc\x00", "Not sent: the bot token is not"),
    ],
)
def test_a_missing_or_odd_token_sends_nothing(receiver, settings, token, error):
    _request, result = send(receiver, settings, secrets=Secrets(access_token=token))

    assert result.outcome == "failed"
    assert result.error.startswith(error)
    assert receiver.received == []
    if token.strip():
        assert token.strip() not in result.error


def test_a_token_with_spaces_around_is_trimmed(receiver, settings):
    receiver.script(Reply(200, body=OK))
    _request, result = send(receiver, settings, secrets=Secrets(access_token=f" {TOKEN}\n"))
    assert result.outcome == "delivered"
    assert receiver.received[0].path == f"/bot{TOKEN}/sendMessage"


def test_a_connection_error_does_not_quote_the_token(settings):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.POSTBACKS_TELEGRAM_BASE_URL = f"http://127.0.0.1:{port}"
    request = TelegramMessage().prepare(make_rule(), CONTEXT)
    result = TelegramMessage().send(request, timeout=2, secrets=SECRETS)

    assert result.outcome == "retry"
    assert "/bot***/sendMessage" in result.error
    assert TOKEN not in result.error


def test_a_timeout_is_retried(receiver, settings):
    receiver.script(Reply(200, body=OK, delay=2))
    _request, result = send(receiver, settings, timeout=0.5)
    assert result.outcome == "retry"
    assert result.error.startswith("Timeout")
    assert TOKEN not in result.error


def test_an_answer_quoting_the_token_is_scrubbed(receiver, settings):
    receiver.script(Reply(502, body=f"<html>upstream /bot{TOKEN}/sendMessage failed</html>"))
    _request, result = send(receiver, settings)
    assert (result.outcome, result.status_code) == ("retry", 502)
    assert result.response_body == "<html>upstream /bot***/sendMessage failed</html>"


# --- classify: Telegram's documented answers --------------------------------------------------


def answer(code: int, description: str, **parameters) -> str:
    body = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return json.dumps(body)


def classify(status, body, headers=None):
    response = SimpleNamespace(status_code=status, headers=headers or {})
    return TelegramMessage().classify(response, body, 9)


@pytest.mark.parametrize(
    ("status", "body", "outcome", "error"),
    [
        (200, OK, "delivered", ""),
        (
            200,
            answer(400, "Bad Request: message text is empty"),
            "retry",
            'Telegram answered 200 without "ok": true: Bad Request: message text is empty',
        ),
        (200, "OK", "retry", 'Telegram answered 200 without "ok": true'),
        (200, '{"result": 1}', "retry", 'Telegram answered 200 without "ok": true'),
        (
            400,
            answer(400, "Bad Request: chat not found"),
            "failed",
            "Telegram 400: Bad Request: chat not found (check the chat ID, and that the bot "
            "was added to the chat (or the user started it))",
        ),
        (
            400,
            answer(400, "Bad Request: group chat was upgraded to a supergroup chat",
                   migrate_to_chat_id=-1001234567890),
            "failed",
            "Telegram 400: Bad Request: group chat was upgraded to a supergroup chat (the "
            "group is now the supergroup -1001234567890: set the chat ID to it)",
        ),
        (
            401,
            answer(401, "Unauthorized"),
            "failed",
            "Telegram 401: Unauthorized (check the bot token (from @BotFather))",
        ),
        (
            403,
            answer(403, "Forbidden: bot was blocked by the user"),
            "failed",
            "Telegram 403: Forbidden: bot was blocked by the user (the bot cannot post there: "
            "unblock it, add it back to the chat, or make it an admin of the channel)",
        ),
        (
            403,
            answer(403, "Forbidden: bot was kicked from the supergroup chat"),
            "failed",
            "Telegram 403: Forbidden: bot was kicked from the supergroup chat (the bot cannot "
            "post there: unblock it, add it back to the chat, or make it an admin of the "
            "channel)",
        ),
        (
            404,
            answer(404, "Not Found"),
            "failed",
            "Telegram 404: Not Found (check the bot token (from @BotFather))",
        ),
        (409, answer(409, "Conflict: x"), "failed", "Telegram 409: Conflict: x"),
        (500, answer(500, "Internal Server Error"), "retry", "Telegram 500: Internal Server Error"),
        (502, "<html>Bad Gateway</html>", "retry", "HTTP 502"),
        (400, "<html>Bad Request</html>", "failed", "HTTP 400"),
        (302, "", "failed", "HTTP 302: redirect to ? not followed"),
    ],
)  # fmt: skip
def test_classify(status, body, outcome, error):
    result = classify(status, body)
    assert (result.outcome, result.error) == (outcome, error)
    assert (result.status_code, result.response_body, result.duration_ms) == (status, body, 9)
    assert result.retry_after is None


def test_flood_control_is_retried_after_the_given_seconds():
    body = answer(429, "Too Many Requests: retry after 34", retry_after=34)
    result = classify(429, body, {"Retry-After": "5"})
    assert (result.outcome, result.retry_after) == ("retry", 34.0)
    assert result.error == "Telegram 429: Too Many Requests: retry after 34"


@pytest.mark.parametrize("bogus", ["34", -1, True, None, [1]])
def test_an_unusable_retry_after_falls_back_to_the_header(bogus):
    body = answer(429, "Too Many Requests", retry_after=bogus)
    assert classify(429, body, {"Retry-After": "7"}).retry_after == 7.0
    assert classify(429, body).retry_after is None


def test_a_nan_retry_after_is_ignored():
    body = (
        '{"ok": false, "error_code": 429, "description": "x", "parameters": {"retry_after": NaN}}'
    )
    assert classify(429, body).retry_after is None


def test_a_429_inside_a_200_is_flood_control():
    result = classify(200, answer(429, "Too Many Requests: retry after 3", retry_after=3))
    assert (result.outcome, result.retry_after) == ("retry", 3.0)


def test_a_long_description_is_clipped():
    result = classify(400, answer(400, "Bad Request: " + "x" * 5000))
    assert len(result.error) == len("Telegram 400: ") + 300


# --- validate --------------------------------------------------------------------------------


def errors_of(rule: PostbackRule) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        TelegramMessage().validate(rule)
    return caught.value.message_dict


def test_a_valid_rule_has_no_warning():
    rule = make_rule(body_template="💰 {payout} {payout_currency} from {var:site}")
    assert TelegramMessage().validate(rule, known_vars={"site"}) == []
    assert TelegramMessage().validate(make_rule(account_id="@deals_feed")) == []


TOKEN_ERROR = (
    "A bot token from @BotFather looks like 123456789:AAH…: the bot's number, a colon, "
    "then about 35 letters, digits, - or _."
)
CHAT_ERROR = (
    "A chat ID is a number (e.g. -1001234567890 for a group or channel) or a public "
    "channel's @username (5-32 letters, digits or _)."
)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"access_token": ""}, {"access_token": ["Enter the bot token from @BotFather."]}),
        ({"access_token": "123456789"}, {"access_token": [TOKEN_ERROR]}),
        ({"access_token": "123456789:short"}, {"access_token": [TOKEN_ERROR]}),
        ({"access_token": TOKEN + "/sendMessage?x"}, {"access_token": [TOKEN_ERROR]}),
        ({"access_token": "bot" + TOKEN}, {"access_token": [TOKEN_ERROR]}),
        (
            {"account_id": ""},
            {"account_id": ["Enter the chat ID, e.g. -1001234567890 or @channelname."]},
        ),
        ({"account_id": "deals_feed"}, {"account_id": [CHAT_ERROR]}),
        ({"account_id": "@abc"}, {"account_id": [CHAT_ERROR]}),
        ({"account_id": "-100 123"}, {"account_id": [CHAT_ERROR]}),
        ({"account_id": "https://t.me/deals"}, {"account_id": [CHAT_ERROR]}),
        (
            {"body_template": "Paid {payuot}"},
            {"body_template": ["Unknown macro {payuot}; did you mean {payout}?"]},
        ),
        (
            {"body_template": "{status:approved=1,=2}"},
            {"body_template": [
                "Malformed mapping :approved=1,=2 in {status:approved=1,=2}: write "
                "value=replacement pairs separated by commas, e.g. approved=1,rejected=0 "
                "(*=x for any other value)."
            ]},
        ),
    ],
)  # fmt: skip
def test_validation_errors(fields, expected):
    assert errors_of(make_rule(**fields)) == expected


def test_an_unknown_custom_variable_is_refused():
    with pytest.raises(ValidationError) as caught:
        TelegramMessage().validate(make_rule(body_template="{var:sub}"), known_vars={"site"})
    assert caught.value.message_dict == {
        "body_template": [
            "Unknown custom variable {var:sub}: this rule's traffic sources define site."
        ]
    }


def test_every_error_is_reported_at_once():
    rule = make_rule(access_token="x", account_id="y", body_template="{nope}")
    assert set(errors_of(rule)) == {"access_token", "account_id", "body_template"}


def test_unused_fields_and_long_templates_are_warned_about():
    rule = make_rule(
        url_template="https://api.telegram.org/bot1/sendMessage",
        headers_template="X-A: 1",
        success_mode="contains",
        success_pattern="ok",
        body_template="{conversion.cost} " + "x" * TEXT_MAX,
    )
    assert TelegramMessage().validate(rule) == [
        "{conversion.cost} is not recorded yet: it renders empty.",
        "The message is cut at 4096 characters (Telegram's limit).",
        "The postback URL is not used: a Telegram message goes to the Bot API "
        "(POSTBACKS_TELEGRAM_BASE_URL).",
        "The headers are not used by a Telegram message.",
        "'Success when' is not used: a message counts as sent when Telegram answers \"ok\": true.",
    ]


def test_the_model_clean_runs_the_telegram_checks():
    with pytest.raises(ValidationError) as caught:
        make_rule(access_token="nope").clean()
    assert caught.value.message_dict["access_token"] == [TOKEN_ERROR]
