"""Conversion lifecycle and rule firing through /cv, /i and the services (any database)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from campaigns.models import AffiliateNetwork
from postbacks import services as postbacks
from postbacks.models import Delivery, EventType, Trigger
from tests import factories
from tracker import services
from tracker.models import (
    Conversion,
    ConversionStatusChange,
    Impression,
    InboundRequest,
    RejectionReason,
)

pytestmark = pytest.mark.django_db
URL = "https://ts.example/pb?cid={externalid}&s={status}"


@pytest.fixture
def click():
    return factories.click(external_id="ext-1")


def cv(client, click, **params):
    return client.get("/cv", {"click_id": str(click.pk), **params})


def fired(rule) -> list[Delivery]:
    return list(Delivery.objects.filter(rule=rule).order_by("id"))


def test_pending_then_approved_fires_the_approved_rule_exactly_once(client, click):
    rule = factories.rule(URL, statuses=["approved"])
    assert cv(client, click, txid="L-1", status="pending").json()["status"] == "ok"
    assert fired(rule) == []
    answer = cv(client, click, txid="L-1", status="APPROVED").json()
    assert answer["status"] == "status_changed"
    assert (answer["previous_status"], answer["new_status"]) == ("pending", "approved")
    again = cv(client, click, txid="L-1", status="approved").json()
    assert again["status"] == "duplicate"
    assert cv(client, click, txid="L-1").json()["status"] == "duplicate"  # no status sent
    (delivery,) = fired(rule)
    assert delivery.url == "https://ts.example/pb?cid=ext-1&s=approved"
    assert delivery.event_detail == "status pending -> approved"
    conversion = Conversion.objects.get()
    assert conversion.status == "approved" and conversion.status_changed_at
    change = ConversionStatusChange.objects.get()
    assert (change.old_status, change.new_status, change.source) == (
        "pending",
        "approved",
        "postback",
    )
    assert change.inbound_request.outcome == InboundRequest.Outcome.STATUS_CHANGED


def test_trigger_created_only_and_changed_only(client, click):
    on_create = factories.rule(URL, name="create", trigger=Trigger.CREATED)
    on_change = factories.rule(URL, name="change", trigger=Trigger.CHANGED)
    cv(client, click, txid="A", status="pending")
    cv(client, click, txid="A", status="approved")
    assert [d.event_detail for d in fired(on_create)] == ["created pending"]
    assert [d.event_detail for d in fired(on_change)] == ["status pending -> approved"]


def test_network_status_and_parameter_mapping(client, click):
    network = click.offer.affiliate_network
    network.status_map = {"1": "approved", "0": "rejected", "2": "pending"}
    network.param_map = {"status": "state", "rejection_reason": "reason", "txid": "tid"}
    network.save()
    rule = factories.rule(URL, statuses=["rejected"])
    assert cv(client, click, tid="T9", state="2").json()["status"] == "ok"
    answer = cv(client, click, tid="T9", state="0", reason="Bot-Farm").json()
    assert answer["new_status"] == "rejected"
    conversion = Conversion.objects.get()
    assert (conversion.txid, conversion.rejection_reason) == ("T9", "bot-farm")
    assert conversion.rejection_reason_unknown  # not in the list: kept and flagged
    assert len(fired(rule)) == 1
    bad = cv(client, click, tid="T9", state="7")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_status"
    assert "network's values 0=rejected, 1=approved, 2=pending" in bad.json()["detail"]


def test_status_values_any_case_and_aliases(client, click):
    assert cv(client, click, txid="X", status="Pending").json()["status"] == "ok"
    assert cv(client, click, txid="X", status="Chargeback").json()["new_status"] == "refunded"
    answer = cv(client, click, txid="Y", status="maybe")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_status"


def test_rejection_reasons_condition(client, click):
    fraud, _ = RejectionReason.objects.get_or_create(
        code="fraud", defaults={"label": "Fraud suspected"}
    )
    rule = factories.rule(
        URL + "&r={rejection_reason}&l={rejection_reason.label}&c={campaign.name}",
        statuses=["rejected"],
    )
    rule.rejection_reasons.set([fraud])
    postbacks.rules_cache_clear()
    cv(client, click, txid="1", status="rejected", rejection_reason="duplicate")
    cv(client, click, txid="2", status="rejected", rejection_reason="FRAUD")
    (delivery,) = fired(rule)
    assert delivery.url.endswith("&r=fraud&l=Fraud%20suspected&c=Campaign")
    assert not Conversion.objects.get(txid="2").rejection_reason_unknown


def test_delayed_delivery_is_cancelled_when_the_lead_is_rejected(client, click):
    crm = factories.rule(
        URL, name="CRM after fraud checks", statuses=["approved"], delay_seconds=600
    )
    cv(client, click, txid="L", status="approved")
    (delivery,) = fired(crm)
    assert delivery.status == "scheduled"
    cv(client, click, txid="L", status="rejected", rejection_reason="fraud")
    delivery.refresh_from_db()
    assert delivery.status == "cancelled"
    assert "changed to rejected (fraud)" in delivery.last_error
    assert "fires on approved" in delivery.last_error


def test_a_quick_succession_of_changes_cancels_no_undelayed_postback(client, click):
    """pending -> rejected (fraud) -> refunded within a second: the rejection rule has no
    delay, so its delivery matched its event and is sent, however fast the refund follows.
    Only a delayed rule's waiting delivery ("await fraud checks") is cancelled."""
    rejected = factories.rule(URL, name="Rejections", statuses=["rejected"])
    delayed = factories.rule(
        URL, name="CRM after fraud checks", statuses=["rejected"], delay_seconds=600
    )
    cv(client, click, txid="Q", status="pending")
    cv(client, click, txid="Q", status="rejected", rejection_reason="fraud")
    cv(client, click, txid="Q", status="refunded")

    (sent,) = fired(rejected)
    assert (sent.status, sent.last_error) == ("scheduled", "")
    (waiting,) = fired(delayed)
    assert waiting.status == "cancelled"
    assert "changed to refunded" in waiting.last_error


def test_first_only_event_and_conversion_types(client, click):
    every = factories.rule(URL, name="every conversion")
    first = factories.rule(URL, name="first only", first_only=True)
    event = factories.rule(URL, name="upsell event", event_type=EventType.EVENT)
    sale = factories.rule(URL, name="sales", conversion_types=["Sale"])
    cv(client, click, txid="1", ct="lead")
    cv(client, click, txid="2", ct="upsell")
    cv(client, click, txid="3", ct="sale")
    assert len(fired(every)) == 3
    assert len(fired(first)) == 1
    assert [d.conversion.txid for d in fired(event)] == ["2", "3"]
    assert [d.event_type for d in fired(event)] == ["event", "event"]
    assert [d.conversion.txid for d in fired(sale)] == ["3"]


def test_specific_rule_replaces_or_adds_to_the_global_one(client, click):
    global_rule = factories.rule(URL, name="global")
    specific = factories.rule(URL, name="specific", sources=[click.traffic_source])
    cv(client, click, txid="1")
    assert (len(fired(global_rule)), len(fired(specific))) == (1, 1)
    specific.replaces_global = True
    specific.save()
    cv(client, click, txid="2")
    assert (len(fired(global_rule)), len(fired(specific))) == (1, 2)
    other_source = factories.traffic_source("Outbrain")
    specific.traffic_sources.set([other_source])
    cv(client, click, txid="3")  # the specific rule is out of scope: the global one fires
    assert (len(fired(global_rule)), len(fired(specific))) == (2, 2)


def test_impression_pixel_records_and_fires(client):
    campaign = factories.campaign()
    rule = factories.rule(URL, event_type=EventType.IMPRESSION)
    answer = client.get(f"/i/{campaign.key}", {"external_id": "imp-7", "site": "news"})
    assert answer.status_code == 200 and answer["Content-Type"] == "image/gif"
    assert answer.content.startswith(b"GIF89a") and len(answer.content) == 42
    impression = Impression.objects.get()
    assert (impression.external_id, impression.var1) == ("imp-7", "news")
    (delivery,) = fired(rule)
    assert delivery.impression == impression and delivery.click is None
    assert delivery.url == "https://ts.example/pb?cid=imp-7&s="
    assert client.get("/i/nope").status_code == 404
    assert client.post(f"/i/{campaign.key}").status_code == 405


def test_click_rule_fires_on_click(client):
    campaign = factories.campaign()
    rule = factories.rule("https://ts.example/c?cid={externalid}", event_type=EventType.CLICK)
    client.get(f"/c/{campaign.key}", {"external_id": "clk-1"})
    (delivery,) = fired(rule)
    assert delivery.url == "https://ts.example/c?cid=clk-1"


def test_deactivating_a_rule_cancels_its_scheduled_deliveries(client, click):
    rule = factories.rule(URL, delay_seconds=3600)
    cv(client, click, txid="1")
    cv(client, click, txid="2")
    assert postbacks.rules_waiting_count([rule.pk]) == 2
    assert postbacks.rules_deactivate([rule.pk], "Cancelled: rule switched off") == 2
    rule.refresh_from_db()
    assert not rule.is_active
    assert {d.status for d in fired(rule)} == {"cancelled"}
    cv(client, click, txid="3")
    assert len(fired(rule)) == 2


def test_status_change_service_refuses_unknown_status_and_ignores_same(click):
    conversion = services.conversion_create(click, payout=None, txid="S")
    with pytest.raises(ValueError, match="Unknown status"):
        services.conversion_status_change(conversion, "won", source="admin")
    assert services.conversion_status_change(conversion, "approved", source="admin") is None
    change = services.conversion_status_change(conversion, "refunded", source="api", note="CB")
    assert (change.old_status, change.new_status, change.note) == ("approved", "refunded", "CB")


def test_admin_status_change_and_trace_page(admin_client, click):
    rule = factories.rule(URL, statuses=["rejected"], delay_seconds=0)
    crm = factories.rule(URL, name="delayed CRM", statuses=["approved"], delay_seconds=900)
    answer = admin_client.get("/cv", {"click_id": str(click.pk), "txid": "T", "status": "approved"})
    conversion_id = answer.json()["conversion_id"]
    page = admin_client.post(
        "/admin/tracker/conversion/",
        {
            "action": "change_status",
            "_selected_action": [conversion_id],
            "apply": "1",
            "status": "rejected",
            "rejection_reason": "fraud",
            "note": "Chargeback risk",
        },
        follow=True,
    )
    assert b"1 conversion changed." in page.content
    change = ConversionStatusChange.objects.get()
    assert change.source == "admin" and change.user.username == "admin"
    assert len(fired(rule)) == 1
    assert fired(crm)[0].status == "cancelled"
    trace = admin_client.get(f"/admin/tracker/conversion/{conversion_id}/change/")
    text = trace.content.decode()
    for expected in (
        "Inbound requests and dedup decisions",
        "approved → <b>rejected</b>",
        "Chargeback risk",
        "delayed CRM",
        "Cancelled: the conversion changed to rejected (fraud) before sending",
        "status approved -&gt; rejected",
    ):
        assert expected in text, expected


def test_mapping_validation_refuses_bad_values():
    from django.core.exceptions import ValidationError

    network = AffiliateNetwork(name="N", status_map={"1": "won"}, param_map={"txid": ""})
    with pytest.raises(ValidationError) as info:
        network.full_clean()
    assert set(info.value.message_dict) >= {"status_map", "param_map"}


def test_status_change_keeps_the_delivery_of_a_still_matching_rule(client, click):
    rule = factories.rule(URL, statuses=["approved", "pending"], delay_seconds=60)
    cv(client, click, txid="K", status="pending")
    cv(client, click, txid="K", status="approved")
    assert [d.status for d in fired(rule)] == ["scheduled", "scheduled"]
    assert all(d.due_at > timezone.now() + timedelta(seconds=30) for d in fired(rule))
