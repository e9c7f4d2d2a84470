"""Destinations end to end: POST bodies, templated headers, success rules and auto-disable
on PostgreSQL, Redis, a Celery worker process and a local HTTP receiver."""

from __future__ import annotations

import json

import pytest

from postbacks.models import Attempt, Delivery, PostbackRule
from postbacks.receiver import Reply
from tests import conftest as shared
from tests import factories
from tests.conftest import campaign_with_rule, wait_until

pytestmark = pytest.mark.integration


def setup_campaign(receiver, **rule_fields):
    return campaign_with_rule(receiver.url + "/pb?c={externalid}", **rule_fields)


def convert(client, campaign, external_id: str, txid: str) -> None:
    shared.convert(client, campaign, external_id, txid=txid, payout="2.35")


def all_finished():
    rows = Delivery.objects.filter(is_test=False, rule__isnull=False)
    return rows.exists() and not rows.filter(status__in=["scheduled", "sending"]).exists()


def test_post_json_rule_with_headers(worker, receiver, client):
    campaign, _rule = setup_campaign(
        receiver,
        http_method="POST",
        body_format="json",
        body_template='{"click_id": "{externalid}", "revenue": {payout|0}, "tx": "{txid}"}',
        headers_template="Authorization: Bearer s3cret\nX-Click: {externalid}",
        success_mode="contains",
        success_pattern='"ok"',
    )
    receiver.default = Reply(200, body='{"ok": 1}')
    external_id = 'tbl "1" & é\\'
    convert(client, campaign, external_id, "T-1")

    (got,) = receiver.wait_for(1)
    assert got.method == "POST"
    assert got.path == "/pb?c=" + "tbl%20%221%22%20%26%20%C3%A9%5C"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Authorization"] == "Bearer s3cret"
    assert json.loads(got.body) == {"click_id": external_id, "revenue": 2.35, "tx": "T-1"}
    assert wait_until(all_finished)
    delivery = Delivery.objects.get()
    assert got.headers["Idempotency-Key"] == str(delivery.public_id)
    assert (delivery.status, delivery.method, delivery.success_mode) == (
        "delivered", "POST", "contains",
    )  # fmt: skip
    assert Attempt.objects.get().outcome == "delivered"


def test_a_200_without_the_expected_body_is_retried_then_failed(worker, receiver, client):
    campaign, _rule = setup_campaign(
        receiver,
        success_mode="regex",
        success_pattern=r'"success"\s*:\s*true',
        max_attempts=2,
        retry_base_seconds=1,
    )
    receiver.default = Reply(200, body='{"success": false}')
    convert(client, campaign, "abc", "T-2")

    assert len(receiver.wait_for(2)) == 2
    assert wait_until(all_finished)
    attempts = list(Attempt.objects.order_by("number").values_list("outcome", "status_code"))
    assert attempts == [("retry", 200), ("failed", 200)]
    assert Delivery.objects.get().status == "failed"


def test_failures_in_a_row_deactivate_the_rule_and_cancel_its_waiting_deliveries(
    worker, receiver, client
):
    campaign, rule = setup_campaign(receiver, disable_after_failures=2, max_attempts=1)
    waiting = factories.delivery(
        receiver.url + "/pb?c=later", rule=rule, due_in=3600, click=factories.click(campaign)
    )
    receiver.default = Reply(500, body="down")
    convert(client, campaign, "a", "T-3")
    convert(client, campaign, "b", "T-4")

    assert len(receiver.wait_for(2)) == 2
    rule = wait_until(lambda: PostbackRule.objects.filter(pk=rule.pk, is_active=False).first())
    assert rule is not None, "the rule was not deactivated"
    assert rule.needs_attention
    assert rule.disabled_reason == (
        "Deactivated after 2 failed deliveries in a row; last error: HTTP 500"
    )
    waiting.refresh_from_db()
    assert waiting.status == "cancelled"
    assert "deactivated automatically" in waiting.last_error
    assert len(receiver.received) == 2


def test_410_gone_deactivates_the_rule_at_once(worker, receiver, client):
    campaign, rule = setup_campaign(receiver, disable_after_failures=0)
    waiting = factories.delivery(
        receiver.url + "/pb?c=later", rule=rule, due_in=3600, click=factories.click(campaign)
    )
    receiver.default = Reply(410, body="campaign removed")
    convert(client, campaign, "a", "T-5")

    assert len(receiver.wait_for(1)) == 1
    rule = wait_until(lambda: PostbackRule.objects.filter(pk=rule.pk, is_active=False).first())
    assert rule is not None, "the rule was not deactivated"
    assert rule.disabled_reason == "Deactivated: the destination answered 410 Gone"
    assert Delivery.objects.get(pk=waiting.pk).status == "cancelled"
    attempt = Attempt.objects.get()
    assert (attempt.outcome, attempt.status_code) == ("failed", 410)
