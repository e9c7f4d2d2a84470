"""CRM webhooks end to end on PostgreSQL, Redis, a Celery worker process and a local HTTP
receiver playing the CRM: the exact signed JSON, retries with the same webhook-id and a
fresh signature, secret rotation, and the CRM's status sync back firing another rule."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from postbacks import signing
from postbacks.models import Attempt, Delivery
from postbacks.receiver import Reply
from postbacks.services import rotate_signing_secret
from tests import conftest as shared
from tests import factories
from tests.conftest import campaign_with_rule, settled, wait_until
from tracker.models import Click, Conversion, InboundRequest

pytestmark = pytest.mark.integration


def setup(receiver, **rule_fields):
    rule_fields.setdefault("signing_secret", signing.new_secret())
    return campaign_with_rule(
        receiver.url + "/crm?src={trafficsource.name}",
        campaign_name="Spring",
        offer_name="Loans",
        payout=Decimal("1.50"),
        kind="webhook",
        name="CRM",
        **rule_fields,
    )


def convert(client, campaign, *, status: str = "approved", txid: str = "T-1") -> Conversion:
    answer = shared.convert(
        client, campaign, "tbl-1", click_request={"query": {"site": "news"}},
        payout="2.35", txid=txid, status=status,
    )  # fmt: skip
    return Conversion.objects.get(pk=answer.json()["conversion_id"])


def finished(rule) -> bool:
    return settled(rule=rule)()


def test_a_conversion_fires_the_exact_signed_json(worker, receiver, client):
    campaign, rule = setup(receiver)
    conversion = convert(client, campaign)

    (got,) = receiver.wait_for(1)
    assert wait_until(lambda: finished(rule))
    delivery = Delivery.objects.get(rule=rule)
    click = Click.objects.select_related("offer").get(pk=conversion.click_id)
    assert (got.method, got.path) == ("POST", "/crm?src=Taboola")
    assert got.body == delivery.body.encode()  # exactly what was planned, byte for byte
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["webhook-id"] == got.headers["Idempotency-Key"] == str(delivery.public_id)
    assert Webhook(rule.signing_secret).verify(got.body, got.headers) == json.loads(got.body)
    assert json.loads(got.body) == {
        "type": "conversion.created",
        "timestamp": conversion.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "delivery_id": str(delivery.public_id),
        "conversion": {
            "id": conversion.pk,
            "txid": "T-1",
            "type": None,
            "status": "approved",
            "previous_status": None,
            "rejection_reason": None,
            "rejection_reason_label": None,
            "payout": 2.35,
            "currency": conversion.currency,
            "params": {},
        },
        "click": {
            "id": str(click.pk),
            "time": int(click.created_at.timestamp()),
            "external_id": "tbl-1",
            "ip": "127.0.0.1",
            "user_agent": None,
            "referrer": None,
            **{name: getattr(click, field) or None for name, field in VISIT.items()},
            "asn": click.asn,
            "is_bot": False,
            "lander_id": None,
            "vars": {"var1": "news"},
            "parameters": {"site": "news"},
        },
        "campaign": {"id": campaign.pk, "name": "Spring"},
        "offer": {"id": click.offer_id, "name": "Loans"},
        "traffic_source": {"id": campaign.traffic_source_id, "name": "Taboola"},
        "affiliate_network": {"id": click.offer.affiliate_network_id, "name": "Network"},
    }
    attempt = Attempt.objects.get(delivery=delivery)
    assert (attempt.outcome, attempt.method, attempt.status_code) == ("delivered", "POST", 200)
    assert rule.signing_secret not in json.dumps(delivery.headers) + attempt.url


# The payload's visit fields -> the Click fields they come from.
VISIT = {
    "country": "country_code", "country_name": "country_name", "region": "region",
    "city": "city", "device": "device_type", "os": "os", "os_version": "os_version",
    "browser": "browser", "browser_version": "browser_version", "brand": "device_brand",
    "model": "device_model", "language": "language", "isp": "isp", "carrier": "carrier",
    "connection_type": "connection_type",
}  # fmt: skip


def test_a_retry_carries_the_same_webhook_id_and_a_fresh_valid_signature(worker, receiver, client):
    campaign, rule = setup(receiver, retry_base_seconds=2, max_attempts=3)
    receiver.script(Reply(500, body="busy"))
    convert(client, campaign)

    first, second = receiver.wait_for(2)
    assert wait_until(lambda: finished(rule))
    delivery = Delivery.objects.get(rule=rule)
    assert (first.status, second.status) == (500, 200)
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == str(delivery.public_id)
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert second.headers["webhook-signature"] != first.headers["webhook-signature"]
    for got in (first, second):
        Webhook(rule.signing_secret).verify(got.body, got.headers)
    outcomes = list(Attempt.objects.order_by("number").values_list("outcome", "status_code"))
    assert outcomes == [("retry", 500), ("delivered", 200)]


def test_a_rotated_secret_verifies_with_either_secret_during_the_grace_period(
    worker, receiver, client
):
    campaign, rule = setup(receiver)
    old = rule.signing_secret
    new = rotate_signing_secret(rule, grace_hours=1)
    convert(client, campaign)

    (got,) = receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(got.body, got.headers)["type"] == "conversion.created"
    stranger = signing.new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(got.body, got.headers)


def test_the_crm_approval_fires_the_rule_conditioned_on_approved(worker, receiver, client):
    campaign, crm_rule = setup(receiver)
    approved = factories.rule(
        receiver.url + "/ts?c={externalid}&s={status}&p={payout}",
        name="approved",
        statuses=["approved"],
        trigger="changed",
    )
    convert(client, campaign, status="pending", txid="L-9")

    # The CRM gets the pending lead, checks our signature, approves it with its own.
    (lead,) = receiver.wait_for(1)
    payload = Webhook(crm_rule.signing_secret).verify(lead.body, lead.headers)
    assert payload["conversion"]["status"] == "pending"
    body = json.dumps(
        {"conversion_id": payload["conversion"]["id"], "status": "approved", "payout": "5"}
    )
    headers = signing.sign_headers(
        f"crm_{lead.headers['webhook-id']}", body, [crm_rule.signing_secret]
    )
    answer = client.post(
        f"/crm/{crm_rule.pk}/status", body, content_type="application/json", headers=headers
    )
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "status": "ok",
        "conversion_id": payload["conversion"]["id"],
        "changed": True,
    }

    received = receiver.wait_for(3)
    assert wait_until(lambda: finished(approved) and finished(crm_rule))
    to_source = [r for r in received if r.path.startswith("/ts")]
    assert [r.path for r in to_source] == ["/ts?c=tbl-1&s=approved&p=5"]
    assert Delivery.objects.get(rule=approved).status == "delivered"
    # The CRM rule fires on any status change too: it hears of the approval.
    status_changed = json.loads([r for r in received if r.path.startswith("/crm")][-1].body)
    assert status_changed["type"] == "conversion.status_changed"
    assert (
        status_changed["conversion"]["previous_status"],
        status_changed["conversion"]["status"],
    ) == (
        "pending",
        "approved",
    )
    log = InboundRequest.objects.filter(channel="crm").get()
    assert (log.response_status, log.outcome) == (200, "status_changed")
    # The CRM retries its call: same answer, nothing fires again.
    again = client.post(
        f"/crm/{crm_rule.pk}/status", body, content_type="application/json", headers=headers
    )
    assert again.json() == answer.json()
    assert Delivery.objects.filter(rule=approved).count() == 1
