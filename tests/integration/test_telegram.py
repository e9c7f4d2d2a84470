"""Telegram messages end to end: a conversion on the tracker, the real Celery worker, and a
local receiver playing api.telegram.org (PostgreSQL, Redis)."""

from __future__ import annotations

import json
from collections import deque

import pytest

from postbacks.models import Attempt, Delivery
from postbacks.receiver import Receiver, Reply
from tests import conftest as shared
from tests.conftest import campaign_with_rule, wait_until

pytestmark = pytest.mark.integration

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw-_"
OK = json.dumps({"ok": True, "result": {"message_id": 1, "chat": {"id": -1001}, "text": "x"}})


class BotApi:
    """Plays api.telegram.org on the session's ``platforms`` receiver (the worker's Bot API
    base URL, see tests/conftest.py): the scripted replies, then ``default``."""

    def __init__(self, server: Receiver) -> None:
        self.replies: deque[Reply] = deque()
        self.default = Reply(200, body=OK)
        self.server = server
        server.responder = self._reply

    def _reply(self, _request) -> Reply:
        return self.replies.popleft() if self.replies else self.default

    def reset(self) -> None:
        self.replies.clear()
        self.default = Reply(200, body=OK)
        self.server.received.clear()


@pytest.fixture
def bot_api(platforms, worker, settings):
    """The fake Bot API, with the running worker sending to it (and this process planning
    for it)."""
    settings.POSTBACKS_TELEGRAM_BASE_URL = platforms.url
    api = BotApi(platforms)
    api.reset()
    yield api
    api.reset()
    platforms.responder = None


def setup_campaign(**rule_fields):
    rule_fields.setdefault("body_template", "{conversion.type|lead} {payout} {payout_currency}")
    rule_fields.setdefault("access_token", TOKEN)
    rule_fields.setdefault("account_id", "-1001234567890")
    return campaign_with_rule("", campaign_name="Spring", kind="telegram", **rule_fields)


def convert(client, campaign, external_id: str, txid: str) -> None:
    shared.convert(client, campaign, external_id, txid=txid, payout="2.35", ct="sale")


def finished():
    rows = Delivery.objects.filter(rule__isnull=False)
    return rows.exists() and not rows.filter(status__in=["scheduled", "sending"]).exists()


def test_a_conversion_posts_the_message_and_the_log_shows_no_token(bot_api, client):
    campaign, _rule = setup_campaign(
        body_template="💰 {conversion.type} {payout} {payout_currency} — {campaign.name}, "
        "click {externalid}"
    )
    convert(client, campaign, 'tbl "1" <b>', "T-1")

    (got,) = bot_api.server.wait_for(1)
    assert (got.method, got.path) == ("POST", f"/bot{TOKEN}/sendMessage")
    assert got.headers["Content-Type"] == "application/json"
    assert json.loads(got.body) == {
        "chat_id": -1001234567890,
        "text": '💰 sale 2.35 USD — Spring, click tbl "1" <b>',
        "link_preview_options": {"is_disabled": True},
    }
    assert wait_until(finished)
    delivery = Delivery.objects.get()
    attempt = Attempt.objects.get()
    assert (delivery.status, attempt.outcome, attempt.status_code) == (
        "delivered",
        "delivered",
        200,
    )
    assert got.headers["Idempotency-Key"] == str(delivery.public_id)
    assert attempt.url == delivery.url == f"{bot_api.server.url}/bot***/sendMessage"
    secret = TOKEN.split(":")[1]
    stored = [delivery.url, delivery.body, json.dumps(delivery.headers), delivery.last_error]
    stored += [attempt.url, attempt.error, attempt.response_body]
    assert not any(secret in text for text in stored)


def test_flood_control_is_retried_after_retry_after(bot_api, client):
    campaign, _rule = setup_campaign(retry_base_seconds=1, max_attempts=3)
    flood = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 2",
        "parameters": {"retry_after": 2},
    }
    bot_api.replies.append(Reply(429, body=json.dumps(flood)))
    convert(client, campaign, "a", "T-2")

    first, second = bot_api.server.wait_for(2)
    assert second.at - first.at >= 1.9, "retry_after was not honoured"
    assert first.body == second.body
    assert wait_until(finished)
    attempts = list(
        Attempt.objects.order_by("number").values_list("outcome", "status_code", "error")
    )
    assert attempts == [
        ("retry", 429, "Telegram 429: Too Many Requests: retry after 2"),
        ("delivered", 200, ""),
    ]
    assert Delivery.objects.get().status == "delivered"


def test_a_blocked_bot_fails_for_good(bot_api, client):
    campaign, _rule = setup_campaign(max_attempts=5, retry_base_seconds=1)
    blocked = {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    bot_api.default = Reply(403, body=json.dumps(blocked))
    convert(client, campaign, "b", "T-3")

    assert len(bot_api.server.wait_for(1)) == 1
    assert wait_until(finished)
    delivery = Delivery.objects.get()
    attempt = Attempt.objects.get()
    assert (delivery.status, attempt.outcome, attempt.status_code) == ("failed", "failed", 403)
    assert attempt.error.startswith("Telegram 403: Forbidden: bot was blocked by the user (")
    assert delivery.last_error == attempt.error
    assert len(bot_api.server.received) == 1


def test_a_rule_without_a_token_sends_nothing(bot_api, client):
    campaign, _rule = setup_campaign(access_token="")
    convert(client, campaign, "c", "T-4")

    assert wait_until(finished)
    attempt = Attempt.objects.get()
    assert (attempt.outcome, attempt.status_code) == ("failed", None)
    assert attempt.error.startswith("Not sent: no bot token")
    assert bot_api.server.received == []
