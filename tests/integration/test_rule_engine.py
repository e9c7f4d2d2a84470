"""The rule engine end to end: each type, each firing condition, delay-then-cancel and
replay, on PostgreSQL, Redis, a Celery worker process and local HTTP receivers."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from postbacks import services as postbacks
from postbacks.models import Delivery, EventType, Trigger
from postbacks.receiver import Reply
from tests import factories
from tests.conftest import click, settled, setup_campaign, wait_until, worker_swept
from tracker.models import RejectionReason

pytestmark = pytest.mark.integration
PATH = "/pb?cid={externalid}&status={status}&ct={conversion.type}&reason={rejection_reason}"


def setup(receiver, **rule_fields):
    return setup_campaign(receiver, PATH, payout=Decimal("2"), **rule_fields)


def queries(received) -> list[dict[str, str]]:
    return [{k: v[0] for k, v in parse_qs(urlsplit(r.path).query).items()} for r in received]


def test_lead_pending_then_approved_fires_the_approved_rule_once(worker, receiver, client):
    campaign, _rule = setup(receiver, statuses=["approved"])
    click_id = click(client, campaign, "ext-1")
    client.get("/cv", {"click_id": click_id, "txid": "L1", "status": "pending", "ct": "lead"})
    client.get("/cv", {"click_id": click_id, "txid": "L1", "status": "approved"})
    client.get("/cv", {"click_id": click_id, "txid": "L1", "status": "approved"})
    assert len(receiver.wait_for(1)) == 1
    assert wait_until(settled())
    assert queries(receiver.received) == [{"cid": "ext-1", "status": "approved", "ct": "lead"}]


def test_delayed_crm_rule_is_cancelled_when_the_lead_is_rejected(worker, receiver, client):
    campaign, rule = setup(receiver, statuses=["approved"], delay_seconds=3)
    click_id = click(client, campaign, "ext-1")
    client.get("/cv", {"click_id": click_id, "txid": "L2", "status": "approved"})
    client.get(
        "/cv",
        {"click_id": click_id, "txid": "L2", "status": "rejected", "rejection_reason": "fraud"},
    )
    # The delay passes at once (due now), then a whole sweep of the worker's comes and goes.
    Delivery.objects.filter(rule=rule).update(due_at=timezone.now())
    assert worker_swept()
    assert receiver.received == []
    delivery = Delivery.objects.get(rule=rule)
    assert delivery.status == "cancelled"
    assert "changed to rejected (fraud)" in delivery.last_error


def test_rejected_rule_fires_only_for_chosen_reasons(worker, receiver, client):
    campaign, rule = setup(receiver, statuses=["rejected"])
    fraud, _ = RejectionReason.objects.get_or_create(code="fraud", defaults={"label": "Fraud"})
    rule.rejection_reasons.set([fraud])
    postbacks.rules_cache_clear()
    click_id = click(client, campaign, "ext-1")
    for txid, reason in (("R1", "duplicate"), ("R2", "fraud"), ("R3", "")):
        params = {"click_id": click_id, "txid": txid, "status": "rejected"}
        client.get("/cv", {**params, "rejection_reason": reason})
    assert len(receiver.wait_for(1)) == 1
    assert wait_until(settled(rule=rule))
    assert queries(receiver.received) == [{"cid": "ext-1", "status": "rejected", "reason": "fraud"}]


def test_each_type_fires(worker, receiver, client):
    campaign, _rule = setup(receiver, trigger=Trigger.CREATED)
    url = receiver.url + "/{event.type}?cid={externalid}"
    for event_type in (EventType.IMPRESSION, EventType.CLICK, EventType.EVENT):
        factories.rule(url, name=event_type, event_type=event_type)
    client.get(f"/i/{campaign.key}", {"external_id": "imp"})
    click_id = click(client, campaign, "clk")
    client.get("/cv", {"click_id": click_id, "txid": "1", "ct": "lead"})
    client.get("/cv", {"click_id": click_id, "txid": "2", "ct": "upsell"})
    received = receiver.wait_for(5)
    paths = sorted(r.path.split("&")[0] for r in received)
    assert paths == [
        "/click?cid=clk",
        "/event?cid=clk",
        "/impression?cid=imp",
        "/pb?cid=clk",
        "/pb?cid=clk",
    ]


def test_failed_delivery_is_replayed_from_the_log(worker, receiver, client):
    campaign, rule = setup(receiver, max_attempts=1)
    receiver.default = Reply(500, body="down")
    click_id = click(client, campaign, "ext-1")
    client.get("/cv", {"click_id": click_id, "txid": "F1"})
    assert wait_until(settled(rule=rule))
    delivery = Delivery.objects.get(rule=rule)
    assert delivery.status == "failed"
    receiver.default = Reply(200)
    assert postbacks.deliveries_retry_now(Delivery.objects.filter(pk=delivery.pk)) == 1
    assert len(receiver.wait_for(2)) == 2
    assert wait_until(settled(rule=rule))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == ("delivered", 2)
    first, second = receiver.received
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]


def test_every_modifier_reaches_the_receiver(worker, receiver, client):
    import hashlib

    template = (
        "/m?cid={externalid:raw}&st={status:approved=1,rejected=0}&miss={param1|none}"
        "&h={externalid:md5}&s={txid:sha256}&map={status:pending=2,*=9|x}&pay={payout|0}"
    )
    campaign, rule = setup(receiver)
    rule.url_template = receiver.url + template
    rule.save()
    click_id = click(client, campaign, "ext-1")
    client.get("/cv", {"click_id": click_id, "txid": "T 1", "payout": "2.50"})
    (received,) = receiver.wait_for(1)
    assert received.path == (
        "/m?cid=ext-1&st=1&miss=none"
        f"&h={hashlib.md5(b'ext-1').hexdigest()}&s={hashlib.sha256(b'T 1').hexdigest()}"
        "&map=9&pay=2.5"
    )


def test_firing_conditions_over_a_conversion_life(worker, receiver, client):
    """Types, first-only and the change-only trigger, each seen at the receiver."""
    campaign, _rule = setup(receiver, name="sales", conversion_types=["sale"])
    factories.rule(
        receiver.url + "/first?ct={ct}", name="first", first_only=True, trigger=Trigger.CREATED
    )
    factories.rule(
        receiver.url + "/changed?s={status}&was={status.previous}",
        name="changed",
        trigger=Trigger.CHANGED,
    )
    click_id = click(client, campaign, "ext-1")
    client.get("/cv", {"click_id": click_id, "txid": "1", "ct": "lead", "status": "pending"})
    client.get("/cv", {"click_id": click_id, "txid": "2", "ct": "sale"})
    client.get("/cv", {"click_id": click_id, "txid": "1", "status": "approved"})
    received = receiver.wait_for(3)
    assert wait_until(settled())
    paths = sorted(r.path.split("&reason")[0] for r in receiver.received)
    assert paths == [
        "/changed?s=approved&was=pending",
        "/first?ct=lead",
        "/pb?cid=ext-1&status=approved&ct=sale",
    ]
    assert len(received) == 3
