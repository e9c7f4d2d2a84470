"""Slack and Discord messages end to end: a conversion on the tracker, the real Celery
worker, and a local receiver playing hooks.slack.com and discord.com (PostgreSQL, Redis)."""

from __future__ import annotations

import json
from collections import deque

import pytest

from postbacks.models import Attempt, Delivery
from postbacks.receiver import Receiver, Reply
from tests import conftest as shared
from tests.conftest import campaign_with_rule, settled, wait_until

pytestmark = pytest.mark.integration

SLACK_PATH = "/services/T0ABCDEF1/B0ABCDEF2/abcdEFGHijklMNOPqrstUVWX"
DISCORD_PATH = "/api/webhooks/123456789012345678/" + "aB3_-" * 10
SECRETS = (SLACK_PATH.rsplit("/", 1)[1], DISCORD_PATH.rsplit("/", 1)[1])
DISCORD_OK = json.dumps({"id": "1199", "content": "x", "channel_id": "7"})


class ChatApi:
    """Plays both platforms on the session's ``platforms`` receiver (the worker's webhook
    prefixes, see tests/conftest.py): scripted replies first, then Slack's ``ok`` or
    Discord's message by path."""

    def __init__(self, server: Receiver) -> None:
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None
        self.server = server
        server.responder = self._reply

    def _reply(self, request) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.default is not None:
            return self.default
        if request.path.startswith("/api/webhooks/"):
            return Reply(200, body=DISCORD_OK)
        return Reply(200, body="ok")

    def reset(self) -> None:
        self.replies.clear()
        self.default = None
        self.server.received.clear()


@pytest.fixture
def chat_api(platforms, worker, settings):
    """The fake platforms, with the running worker sending to them (and this process
    accepting their URLs as webhook URLs)."""
    settings.POSTBACKS_SLACK_WEBHOOK_PREFIXES = [f"{platforms.url}/services/"]
    settings.POSTBACKS_DISCORD_WEBHOOK_PREFIXES = [f"{platforms.url}/api/webhooks/"]
    api = ChatApi(platforms)
    api.reset()
    yield api
    api.reset()
    platforms.responder = None


def setup_campaign(kind: str, api: ChatApi, **rule_fields):
    path = SLACK_PATH if kind == "slack" else DISCORD_PATH
    rule_fields.setdefault("access_token", api.server.url + path)
    return campaign_with_rule("", campaign_name="Spring", kind=kind, **rule_fields)


def convert(client, campaign, external_id: str, txid: str) -> None:
    shared.convert(client, campaign, external_id, txid=txid, payout="2.35", ct="sale")


finished = settled(rule__isnull=False)


def assert_no_secret_stored() -> None:
    stored = []
    for delivery in Delivery.objects.all():
        stored += [delivery.url, delivery.body, json.dumps(delivery.headers), delivery.last_error]
    for attempt in Attempt.objects.all():
        stored += [attempt.url, attempt.error, attempt.response_body]
    assert not any(secret in text for text in stored for secret in SECRETS)


def test_slack_gets_the_message_and_the_log_keeps_no_webhook_secret(chat_api, client):
    campaign, _rule = setup_campaign(
        "slack",
        chat_api,
        body_template="*{conversion.type}* {payout} {payout_currency}, {externalid}",
    )
    convert(client, campaign, "<!channel> & co", "S-1")

    (got,) = chat_api.server.wait_for(1)
    assert (got.method, got.path) == ("POST", SLACK_PATH)
    assert got.headers["Content-Type"] == "application/json"
    text = "*sale* 2.35 USD, &lt;!channel&gt; &amp; co"
    assert json.loads(got.body) == {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
    assert wait_until(finished)
    delivery, attempt = Delivery.objects.get(), Attempt.objects.get()
    assert (delivery.status, attempt.outcome, attempt.status_code) == (
        "delivered",
        "delivered",
        200,
    )
    assert got.headers["Idempotency-Key"] == str(delivery.public_id)
    assert attempt.url == delivery.url == f"{chat_api.server.url}/services/T0ABCDEF1/B0ABCDEF2/***"
    assert_no_secret_stored()


def test_slack_rate_limit_is_retried_and_a_removed_webhook_fails(chat_api, client):
    campaign, _rule = setup_campaign("slack", chat_api, retry_base_seconds=1, max_attempts=3)
    chat_api.replies.append(Reply(429, body="rate_limited", headers={"Retry-After": "1"}))
    convert(client, campaign, "a", "S-2")
    first, second = chat_api.server.wait_for(2)
    assert second.at - first.at >= 0.9, "Retry-After was not honoured"
    assert first.body == second.body
    assert wait_until(finished)
    attempts = list(
        Attempt.objects.order_by("number").values_list("outcome", "status_code", "error")
    )
    assert attempts == [("retry", 429, "Slack 429: rate_limited"), ("delivered", 200, "")]

    Attempt.objects.all().delete()
    Delivery.objects.all().delete()
    chat_api.reset()
    chat_api.default = Reply(404, body="no_service")
    convert(client, campaign, "b", "S-3")
    assert wait_until(finished)
    attempt = Attempt.objects.get()
    assert (attempt.outcome, attempt.status_code) == ("failed", 404)
    assert attempt.error.startswith("Slack 404: no_service (the webhook was removed")
    assert len(chat_api.server.received) == 1


def test_a_slack_200_that_is_not_ok_is_retried(chat_api, client):
    campaign, _rule = setup_campaign("slack", chat_api, retry_base_seconds=1, max_attempts=2)
    chat_api.default = Reply(200, body='{"success": false}')
    convert(client, campaign, "c", "S-4")
    assert wait_until(finished, timeout=20)
    attempts = list(Attempt.objects.order_by("number").values_list("outcome", "error"))
    # The last attempt is recorded as failed: no attempt is left to retry it.
    assert [outcome for outcome, _ in attempts] == ["retry", "failed"]
    assert all(error.startswith('Slack answered 200 without "ok"') for _, error in attempts)
    assert Delivery.objects.get().status == "failed"
    assert len(chat_api.server.received) == 2


def test_discord_gets_the_message_without_mentions(chat_api, client):
    campaign, _rule = setup_campaign(
        "discord", chat_api, body_template="**{conversion.type}** {payout}, {externalid}"
    )
    convert(client, campaign, "@everyone *x*", "D-1")

    (got,) = chat_api.server.wait_for(1)
    assert (got.method, got.path) == ("POST", DISCORD_PATH + "?wait=true")
    assert got.query == {"wait": "true"}
    assert json.loads(got.body) == {
        "content": r"**sale** 2.35, \@everyone \*x\*",
        "allowed_mentions": {"parse": []},
    }
    assert wait_until(finished)
    delivery, attempt = Delivery.objects.get(), Attempt.objects.get()
    assert (delivery.status, attempt.outcome) == ("delivered", "delivered")
    assert delivery.url == f"{chat_api.server.url}/api/webhooks/123456789012345678/***?wait=true"
    assert_no_secret_stored()


def test_discord_rate_limit_waits_its_retry_after_and_a_deleted_webhook_fails(chat_api, client):
    campaign, _rule = setup_campaign("discord", chat_api, retry_base_seconds=1, max_attempts=3)
    limited = {"message": "You are being rate limited.", "retry_after": 1.5, "global": False}
    chat_api.replies.append(Reply(429, body=json.dumps(limited)))
    chat_api.replies.append(
        Reply(404, body=json.dumps({"message": "Unknown Webhook", "code": 10015}))
    )
    convert(client, campaign, "d", "D-2")

    first, second = chat_api.server.wait_for(2)
    assert second.at - first.at >= 1.4, "retry_after was not honoured"
    assert wait_until(finished)
    attempts = list(Attempt.objects.order_by("number").values_list("outcome", "status_code"))
    assert attempts == [("retry", 429), ("failed", 404)]
    assert Attempt.objects.get(number=2).error.startswith(
        "Discord 404: Unknown Webhook (the webhook was deleted"
    )
    assert Delivery.objects.get().status == "failed"
