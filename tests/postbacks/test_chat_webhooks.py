"""Slack and Discord messages: the planned request (webhook secret masked), the request on
the wire, escaping of macro values, classification of each platform's documented answers,
validation, and each kind's fields declared once (form and API read them)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from postbacks.masking import mask_secrets
from postbacks.models import PostbackRule
from postbacks.rules import PostbackRuleForm
from postbacks.transports import (
    REGISTRY,
    DiscordMessage,
    Outcome,
    Secrets,
    SlackMessage,
    kind_fields,
    kind_help,
)
from postbacks.transports.chat import masked_webhook

SLACK_URL = "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/abcdEFGHijklMNOPqrstUVWX"
DISCORD_URL = "https://discord.com/api/webhooks/123456789012345678/" + "aB3_-" * 10
CONTEXT = {
    "status": "approved",
    "conversion.type": "sale",
    "payout": "2.35",
    "payout_currency": "USD",
    "campaign.name": "Spring",
    "offer.name": "VPN",
    "click.id": "3f1c",
    "externalid": "<!channel> & <b>@everyone**",
    "delivery.id": "d-1",
}


def make_rule(kind: str, **fields) -> PostbackRule:
    fields.setdefault("access_token", SLACK_URL if kind == "slack" else DISCORD_URL)
    fields.setdefault("url_template", "")
    return PostbackRule(name="Chat", kind=kind, **fields)


def answer(status: int, headers: dict[str, str] | None = None) -> SimpleNamespace:
    return SimpleNamespace(status_code=status, headers=headers or {})


# --- prepare: the planned request, then the one on the wire ---------------------------------


def test_slack_plans_the_message_with_values_escaped_and_no_secret():
    rule = make_rule("slack", body_template="*{conversion.type}* {payout} from <{externalid}>")
    request = SlackMessage().prepare(rule, CONTEXT)

    assert request.method == "POST"
    assert request.url == "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/***"
    assert request.headers == {"Content-Type": "application/json", "Idempotency-Key": "d-1"}
    text = "*sale* 2.35 from <&lt;!channel&gt; &amp; &lt;b&gt;@everyone**>"
    assert json.loads(request.body) == {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
    wire = SlackMessage().authorize(request, Secrets(access_token=SLACK_URL))
    assert wire.url == SLACK_URL
    assert wire.body == request.body


def test_discord_plans_the_message_with_markdown_escaped_and_no_mentions():
    rule = make_rule("discord", body_template="**{conversion.type}** {payout} {externalid}")
    request = DiscordMessage().prepare(rule, CONTEXT)

    assert request.url == "https://discord.com/api/webhooks/123456789012345678/***?wait=true"
    assert json.loads(request.body) == {
        "content": r"**sale** 2.35 \<!channel\> & \<b\>\@everyone\*\*",
        "allowed_mentions": {"parse": []},
    }
    wire = DiscordMessage().authorize(request, Secrets(access_token=DISCORD_URL))
    assert wire.url == DISCORD_URL + "?wait=true"


@pytest.mark.parametrize("transport", [SlackMessage(), DiscordMessage()])
def test_a_blank_template_sends_the_default_message_and_long_ones_are_cut(transport):
    kind = transport.kind
    text = transport.message("", CONTEXT)
    assert "2.35 USD — Spring / VPN, click 3f1c" in text

    long = transport.message("x" * (transport.text_max + 50), CONTEXT)
    assert len(long) == transport.text_max and long.endswith("…")
    assert make_rule(kind).kind == kind


def test_a_missing_or_foreign_webhook_url_sends_nothing():
    request = SlackMessage().prepare(make_rule("slack"), CONTEXT)
    with pytest.raises(ValueError, match="no webhook URL"):
        SlackMessage().authorize(request, Secrets())
    with pytest.raises(ValueError, match="not usable"):
        SlackMessage().authorize(request, Secrets(access_token="https://evil.example/x/y/z"))
    result = SlackMessage().send(request, 5, Secrets())
    assert (result.outcome, result.status_code) == (Outcome.FAILED, None)
    assert result.error.startswith("Not sent: no webhook URL")


def test_the_secret_segment_is_masked_everywhere():
    assert masked_webhook(SLACK_URL + "?x=1") == SLACK_URL.rsplit("/", 1)[0] + "/***"
    secret = SLACK_URL.rsplit("/", 1)[1]
    assert secret not in mask_secrets(f"POST {SLACK_URL} failed")
    assert DISCORD_URL.rsplit("/", 1)[1] not in mask_secrets(f"error at {DISCORD_URL}?wait=true")


def test_an_error_quoting_the_webhook_path_is_scrubbed(settings):
    """A connection error names the path, not the whole URL: the secret is scrubbed."""
    settings.POSTBACKS_SLACK_WEBHOOK_PREFIXES = ["http://127.0.0.1:9/services/"]
    url = "http://127.0.0.1:9/services/T0ABCDEF1/B0ABCDEF2/abcdEFGHijklMNOPqrstUVWX"
    request = SlackMessage().prepare(make_rule("slack", access_token=url), CONTEXT)
    result = SlackMessage().send(request, 2, Secrets(access_token=url))
    assert result.outcome == Outcome.RETRY
    assert "abcdEFGHijklMNOPqrstUVWX" not in result.error


# --- classify --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "outcome", "error", "retry_after"),
    [
        (200, "ok", {}, Outcome.DELIVERED, "", None),
        (200, '{"success": false}', {}, Outcome.RETRY, 'Slack answered 200 without "ok"', None),
        (429, "rate_limited", {"Retry-After": "3"}, Outcome.RETRY, "Slack 429: rate_limited", 3.0),
        (503, "", {}, Outcome.RETRY, "Slack 503: no text", None),
        (400, "invalid_payload", {}, Outcome.FAILED, "Slack 400: invalid_payload", None),
        (404, "no_service", {}, Outcome.FAILED, "Slack 404: no_service (the webhook was", None),
        (410, "channel_is_archived", {}, Outcome.FAILED, "Slack 410: channel_is_archived (", None),
    ],
)
def test_slack_answers(status, body, headers, outcome, error, retry_after):
    result = SlackMessage().classify(answer(status, headers), body, 12)
    assert (result.outcome, result.status_code, result.retry_after) == (
        outcome,
        status,
        retry_after,
    )
    assert result.error.startswith(error)
    assert bool(result.error) == bool(error)


@pytest.mark.parametrize(
    ("status", "body", "outcome", "error", "retry_after"),
    [
        (200, '{"id": "1199", "content": "x"}', Outcome.DELIVERED, "", None),
        (204, "", Outcome.DELIVERED, "", None),
        (200, '{"success": false}', Outcome.RETRY, "Discord answered 200 without", None),
        (
            429,
            '{"message": "You are being rate limited.", "retry_after": 0.75, "global": false}',
            Outcome.RETRY,
            "Discord 429: You are being rate limited.",
            0.75,
        ),
        (502, "Bad gateway", Outcome.RETRY, "Discord 502: Bad gateway", None),
        (
            404,
            '{"message": "Unknown Webhook", "code": 10015}',
            Outcome.FAILED,
            "Discord 404: Unknown Webhook (the webhook was deleted",
            None,
        ),
        (
            400,
            '{"message": "Invalid Form Body", "code": 50035}',
            Outcome.FAILED,
            "Discord 400: Invalid Form Body",
            None,
        ),
    ],
)
def test_discord_answers(status, body, outcome, error, retry_after):
    result = DiscordMessage().classify(answer(status), body, 12)
    assert (result.outcome, result.status_code, result.retry_after) == (
        outcome,
        status,
        retry_after,
    )
    assert result.error.startswith(error)
    assert bool(result.error) == bool(error)


def test_a_redirect_is_not_followed():
    result = SlackMessage().classify(answer(302, {"Location": "https://x.example/"}), "", 3)
    assert result.outcome == Outcome.FAILED
    assert "redirect" in result.error


# --- validate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "url", "message"),
    [
        ("slack", "", "Enter the Slack webhook URL."),
        ("slack", "https://evil.example/services/T1/B1/x", "A Slack webhook URL starts with"),
        ("slack", "https://hooks.slack.com/services/T0ABCDEF1/", "This is not a whole Slack"),
        ("discord", "https://discord.com/api/webhooks/12/short", "This is not a whole Discord"),
        ("discord", SLACK_URL, "A Discord webhook URL starts with"),
    ],
)
def test_the_webhook_url_is_checked(kind, url, message):
    with pytest.raises(ValidationError) as caught:
        REGISTRY[kind]().validate(make_rule(kind, access_token=url))
    assert caught.value.message_dict["access_token"][0].startswith(message)


def test_template_errors_and_unused_fields():
    rule = make_rule(
        "slack",
        body_template="{payout} {extrenalid",
        url_template="https://x.example/",
        headers_template="X-A: 1",
    )
    with pytest.raises(ValidationError) as caught:
        SlackMessage().validate(rule)
    assert "body_template" in caught.value.message_dict

    rule.body_template = "{payout} {externalid}"
    warnings = DiscordMessage().validate(
        make_rule("discord", body_template="{payout}", url_template="https://x.example/")
    )
    assert warnings == ["The postback URL is not used: a Discord message goes to the webhook URL."]


# --- each kind's fields, declared once --------------------------------------------------------


def test_the_form_and_the_api_read_each_kinds_fields_from_its_transport():
    shapes = kind_fields()
    assert shapes["slack"] == {
        "fields": ["access_token", "clear_access_token", "body_template"],
        "signed": False,
        "labels": {"access_token": "Webhook URL", "body_template": "Message"},
        "help": dict(SlackMessage.help),
    }
    assert shapes["s2s"]["signed"] and "http_method" in shapes["s2s"]["fields"]
    assert set(shapes) == set(REGISTRY)

    select = PostbackRuleForm().fields["kind"].widget
    assert json.loads(select.attrs["data-kinds"]) == shapes
    assert "slack: access_token (Webhook URL), body_template (Message)." in kind_help()
    assert "discord: access_token (Webhook URL), body_template (Message)." in kind_help()
