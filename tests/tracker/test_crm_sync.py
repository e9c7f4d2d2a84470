"""CRM status sync back, ``POST /crm/<rule id>/status``: each refusal, the status change
through the service the API and admin use (its rules fire), replays, the inbound log.
Runs on any database."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.test import Client
from django.utils import timezone

from postbacks import crm, signing
from postbacks.models import Delivery, PostbackRule, Trigger
from tests import factories
from tracker import services
from tracker.models import Conversion, ConversionStatusChange, InboundRequest

pytestmark = pytest.mark.django_db
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
CONV = "<the conversion's ID>"


@pytest.fixture
def source():
    return factories.traffic_source()


@pytest.fixture
def crm_rule(source):
    return factories.rule(
        "https://crm.example/hook", kind="webhook", signing_secret=SECRET, sources=[source]
    )


@pytest.fixture
def approved_rule():
    return factories.rule(
        "https://ts.example/pb?c={externalid}&s={status}&p={payout}",
        name="approved",
        statuses=["approved"],
        trigger=Trigger.CHANGED,
    )


@pytest.fixture
def conversion(source):
    click = factories.click(factories.campaign(source), external_id="ext-7")
    return services.conversion_create(
        click, payout=Decimal("3"), currency="USD", txid="L-1", status="pending"
    )


def post(client, rule_id, payload, *, secret=SECRET, at=None, msg_id=None, raw=None, **extra):
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {}
    if secret:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        headers = signing.sign_headers(msg_id, body.decode("utf-8", "replace"), [secret], at=at)
    headers.update(extra)
    return client.post(
        f"/crm/{rule_id}/status", data=body, content_type="application/json", headers=headers
    )


def logged() -> InboundRequest:
    return InboundRequest.objects.filter(channel=crm.CHANNEL).latest("id")


def refused(answer, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.content
    body = answer.json()
    assert body["error"] == code and body["detail"]
    row = logged()
    assert (row.response_status, row.error_code) == (status, code)
    return body


# --- accepted -------------------------------------------------------------------------


def test_approval_changes_the_status_through_the_service_and_fires_its_rules(
    client, crm_rule, approved_rule, conversion
):
    answer = post(client, crm_rule.pk, {"conversion_id": conversion.pk, "status": "Approved"})
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "conversion_id": conversion.pk, "changed": True}
    conversion.refresh_from_db()
    assert conversion.status == "approved" and conversion.status_changed_at
    change = ConversionStatusChange.objects.get()
    assert (change.old_status, change.new_status, change.source) == ("pending", "approved", "crm")
    (delivery,) = Delivery.objects.filter(rule=approved_rule)
    assert delivery.url == "https://ts.example/pb?c=ext-7&s=approved&p=3"
    assert delivery.event_detail == "status pending -> approved"
    row = logged()
    assert change.inbound_request == row
    assert (row.response_status, row.outcome, row.conversion_id) == (
        200,
        InboundRequest.Outcome.STATUS_CHANGED,
        conversion.pk,
    )
    assert row.query.startswith(f"rule={crm_rule.pk}&webhook-id=msg_")
    assert row.click_id == str(conversion.click_id)
    assert row.detail == "pending -> approved"
    assert json.loads(row.body) == {"conversion_id": conversion.pk, "status": "Approved"}


def test_by_click_id_and_txid_with_a_rejection_reason_and_a_note(client, crm_rule, conversion):
    payload = {
        "click_id": str(conversion.click_id),
        "txid": "L-1",
        "status": "declined",
        "rejection_reason": "Fraud",
        "note": "duplicate phone",
    }
    assert post(client, crm_rule.pk, payload).json()["changed"] is True
    conversion.refresh_from_db()
    assert (conversion.status, conversion.rejection_reason) == ("rejected", "fraud")
    assert ConversionStatusChange.objects.get().note == "duplicate phone"


def test_click_id_alone_names_its_only_conversion_and_refuses_when_ambiguous(
    client, crm_rule, conversion
):
    by_click = {"click_id": str(conversion.click_id), "status": "approved"}
    assert post(client, crm_rule.pk, by_click).status_code == 200
    services.conversion_create(conversion.click, payout=None, txid="L-2", is_first=False)
    refused(post(client, crm_rule.pk, by_click), 400, "ambiguous_conversion")


def test_the_same_status_changes_nothing(client, crm_rule, approved_rule, conversion):
    services.conversion_status_change(conversion, "approved", source="api")
    answer = post(client, crm_rule.pk, {"conversion_id": conversion.pk, "status": "approved"})
    assert answer.json() == {"status": "ok", "conversion_id": conversion.pk, "changed": False}
    assert ConversionStatusChange.objects.count() == 1
    assert Delivery.objects.filter(rule=approved_rule).count() == 1
    assert logged().outcome == InboundRequest.Outcome.DUPLICATE


def test_payout_is_replaced_before_the_status_change_so_its_postbacks_carry_it(
    client, crm_rule, approved_rule, conversion
):
    payload = {"conversion_id": conversion.pk, "status": "approved", "payout": 12.5}
    assert post(client, crm_rule.pk, payload).json()["changed"] is True
    conversion.refresh_from_db()
    assert conversion.payout == Decimal("12.5")
    assert conversion.display_payout is not None
    assert Delivery.objects.get(rule=approved_rule).url.endswith("&p=12.5")
    assert logged().detail == "pending -> approved; payout 3 -> 12.5"


def test_a_payout_alone_changes_without_firing(client, crm_rule, approved_rule, conversion):
    payload = {"conversion_id": conversion.pk, "status": "pending", "payout": "4.25"}
    assert post(client, crm_rule.pk, payload).json()["changed"] is True
    conversion.refresh_from_db()
    assert (conversion.status, conversion.payout) == ("pending", Decimal("4.25"))
    assert not Delivery.objects.filter(rule=approved_rule).exists()
    assert logged().outcome == InboundRequest.Outcome.ACCEPTED


def test_a_replay_gets_the_same_answer_and_changes_nothing(
    client, crm_rule, approved_rule, conversion
):
    payload = {"conversion_id": conversion.pk, "status": "approved"}
    body = json.dumps(payload).encode()
    headers = signing.sign_headers("msg_replayed", body.decode(), [SECRET])
    first = client.post(
        f"/crm/{crm_rule.pk}/status", body, content_type="application/json", headers=headers
    )
    # Meanwhile someone sets it back to pending: a replay must not approve it again.
    services.conversion_status_change(conversion, "pending", source="admin")
    again = client.post(
        f"/crm/{crm_rule.pk}/status", body, content_type="application/json", headers=headers
    )
    assert again.status_code == first.status_code == 200
    assert (
        again.json()
        == first.json()
        == {
            "status": "ok",
            "conversion_id": conversion.pk,
            "changed": True,
        }
    )
    conversion.refresh_from_db()
    assert conversion.status == "pending"
    assert ConversionStatusChange.objects.filter(source="crm").count() == 1
    assert Delivery.objects.filter(rule=approved_rule).count() == 1
    replay = logged()
    assert replay.outcome == InboundRequest.Outcome.DUPLICATE
    assert replay.detail.startswith("Replay of webhook-id already applied")
    # The same webhook-id for another rule is another message.
    other = factories.rule("https://crm2.example/", kind="webhook", signing_secret=SECRET)
    assert post(client, other.pk, payload, msg_id="msg_replayed").json()["changed"] is True


def test_the_previous_secret_verifies_during_the_grace_period_only(client, crm_rule, conversion):
    crm_rule.previous_signing_secret = OLD_SECRET
    crm_rule.previous_secret_expires_at = timezone.now() + timedelta(hours=1)
    crm_rule.save()
    payload = {"conversion_id": conversion.pk, "status": "approved"}
    assert post(client, crm_rule.pk, payload, secret=OLD_SECRET).status_code == 200
    PostbackRule.objects.filter(pk=crm_rule.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    payload["status"] = "rejected"
    refused(post(client, crm_rule.pk, payload, secret=OLD_SECRET), 401, "invalid_signature")


# --- refused --------------------------------------------------------------------------


def test_unsigned_is_401(client, crm_rule, conversion):
    body = refused(
        post(client, crm_rule.pk, {"conversion_id": conversion.pk, "status": "approved"},
             secret=""),
        401,
        "invalid_signature",
    )  # fmt: skip
    assert "webhook-signature" in body["detail"]
    assert logged().outcome == InboundRequest.Outcome.FORBIDDEN
    conversion.refresh_from_db()
    assert conversion.status == "pending"


def test_a_wrong_secret_or_a_tampered_body_is_401(client, crm_rule, conversion):
    payload = {"conversion_id": conversion.pk, "status": "approved"}
    wrong = "whsec_" + base64.b64encode(b"w" * 32).decode()
    refused(post(client, crm_rule.pk, payload, secret=wrong), 401, "invalid_signature")
    body = json.dumps(payload).encode()
    headers = signing.sign_headers("msg_t", body.decode(), [SECRET])
    tampered = body.replace(b"approved", b"rejected")
    answer = client.post(
        f"/crm/{crm_rule.pk}/status", tampered, content_type="application/json", headers=headers
    )
    refused(answer, 401, "invalid_signature")
    assert not ConversionStatusChange.objects.exists()


@pytest.mark.parametrize("offset", [-600, 600])
def test_a_stale_timestamp_is_401(client, crm_rule, conversion, offset):
    at = datetime.now(UTC) + timedelta(seconds=offset)
    payload = {"conversion_id": conversion.pk, "status": "approved"}
    refused(post(client, crm_rule.pk, payload, at=at), 401, "stale_timestamp")


def test_unknown_rule_is_404_even_for_an_absurd_id(client, conversion):
    payload = {"conversion_id": conversion.pk, "status": "approved"}
    refused(post(client, 999999, payload), 404, "unknown_rule")
    refused(post(client, 10**30, payload), 404, "unknown_rule")


def test_a_rule_of_another_kind_is_unknown(client, conversion):
    s2s = factories.rule("https://ts.example/pb", signing_secret=SECRET)
    refused(post(client, s2s.pk, {"conversion_id": conversion.pk, "status": "approved"}), 404,
            "unknown_rule")  # fmt: skip


def test_a_webhook_rule_without_a_secret_is_403(client, conversion):
    unsigned = factories.rule("https://crm.example/", kind="webhook")
    answer = post(client, unsigned.pk, {"conversion_id": conversion.pk, "status": "approved"})
    refused(answer, 403, "signing_not_configured")


def test_unknown_or_out_of_scope_conversions_are_404(client, crm_rule, conversion):
    refused(post(client, crm_rule.pk, {"conversion_id": 987654, "status": "approved"}), 404,
            "unknown_conversion")  # fmt: skip
    refused(
        post(client, crm_rule.pk, {"click_id": str(uuid.uuid4()), "status": "approved"}),
        404,
        "unknown_conversion",
    )
    by_txid = {"click_id": str(conversion.click_id), "txid": "nope", "status": "approved"}
    refused(post(client, crm_rule.pk, by_txid), 404, "unknown_conversion")
    other_click = factories.click(factories.campaign(factories.traffic_source("MGID")))
    outside = services.conversion_create(other_click, payout=None, status="pending")
    answer = post(client, crm_rule.pk, {"conversion_id": outside.pk, "status": "approved"})
    refused(answer, 404, "unknown_conversion")
    outside.refresh_from_db()
    assert outside.status == "pending"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"status": "approved"}, "missing_conversion"),
        ({"conversion_id": CONV}, "missing_status"),
        ({"conversion_id": CONV, "status": ""}, "missing_status"),
        ({"conversion_id": CONV, "status": "won"}, "invalid_status"),
        ({"conversion_id": "12a", "status": "approved"}, "invalid_conversion_id"),
        ({"conversion_id": -1, "status": "approved"}, "invalid_conversion_id"),
        ({"conversion_id": 10**40, "status": "approved"}, "invalid_conversion_id"),
        ({"conversion_id": 1.5, "status": "approved"}, "invalid_conversion_id"),
        ({"conversion_id": "\u0663", "status": "approved"}, "invalid_conversion_id"),
        ({"conversion_id": True, "status": "approved"}, "invalid_request"),
        ({"click_id": "not-a-uuid", "status": "approved"}, "invalid_click_id"),
        ({"conversion_id": CONV, "status": {"a": 1}}, "invalid_request"),
        ({"conversion_id": CONV, "status": ["approved"]}, "invalid_request"),
        ({"conversion_id": CONV, "status": "approved", "lead": 5}, "invalid_request"),
        ({"conversion_id": CONV, "status": "approved", "payout": "ten"}, "invalid_payout"),
        ({"conversion_id": CONV, "status": "approved", "payout": "NaN"}, "invalid_payout"),
        ({"conversion_id": CONV, "status": "approved", "payout": 1e12}, "invalid_payout"),
        ({"conversion_id": CONV, "status": "approved", "payout": "999999999.9999999"},
         "invalid_payout"),
        ({"conversion_id": CONV, "status": "rejected", "rejection_reason": "a\x00b"},
         "invalid_characters"),
        ({"conversion_id": CONV, "status": "approved", "note": "\ud800"}, "invalid_characters"),
        ({"conversion_id": CONV, "status": "approved", "note": "n" * 2001}, "invalid_request"),
    ],
)  # fmt: skip
def test_bad_fields_are_400(client, crm_rule, conversion, payload, code):
    if payload.get("conversion_id") is CONV:
        payload = {**payload, "conversion_id": conversion.pk}
    refused(post(client, crm_rule.pk, payload), 400, code)
    conversion.refresh_from_db()
    assert (conversion.status, conversion.payout) == ("pending", Decimal("3"))


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[1, 2]", b'"approved"', b"[" * 60_000, b'{"a": NaN'],
)
def test_malformed_or_deep_json_is_400(client, crm_rule, raw):
    answer = post(client, crm_rule.pk, None, raw=raw)
    refused(answer, 400, "invalid_json")


def test_a_body_over_64_kb_is_413_and_not_read(client, crm_rule, conversion):
    payload = {"conversion_id": conversion.pk, "status": "approved", "note": "x" * 70_000}
    refused(post(client, crm_rule.pk, payload), 413, "body_too_large")
    assert logged().body == "(body not kept: over 65536 bytes)"
    exactly = json.dumps({"conversion_id": conversion.pk, "status": "approved"}).encode()
    padded = exactly[:-1] + b" " * (crm.BODY_MAX_BYTES - len(exactly)) + b"}"
    assert len(padded) == crm.BODY_MAX_BYTES
    assert post(client, crm_rule.pk, None, raw=padded).status_code == 200


def test_other_methods_are_405(client, crm_rule):
    answer = client.get(f"/crm/{crm_rule.pk}/status")
    refused(answer, 405, "method_not_allowed")
    assert answer["Allow"] == "POST"


def test_every_answer_is_json_and_every_call_logged(client, crm_rule, conversion):
    calls = [
        post(client, crm_rule.pk, {"conversion_id": conversion.pk, "status": "x"}),
        post(client, crm_rule.pk, {}, secret=""),
        post(client, crm_rule.pk, {"conversion_id": conversion.pk, "status": "approved"}),
    ]
    assert [c.status_code for c in calls] == [400, 401, 200]
    assert all(c["Content-Type"] == "application/json" for c in calls)
    rows = InboundRequest.objects.filter(channel=crm.CHANNEL).order_by("id")
    assert [r.response_status for r in rows] == [400, 401, 200]
    assert {r.endpoint for r in rows} == {f"/crm/{crm_rule.pk}/status"}
    assert rows[1].query == ""  # unauthenticated: its webhook-id is not trusted


def test_a_replay_of_a_refused_call_is_answered_afresh(client, crm_rule, conversion):
    """Only answers 200 are replayed: a call refused for an unknown conversion succeeds
    once the conversion exists (here: once it is in the rule's scope)."""
    body = json.dumps({"conversion_id": conversion.pk, "status": "approved"}).encode()
    headers = signing.sign_headers("msg_later", body.decode(), [SECRET])
    crm_rule.traffic_sources.set([factories.traffic_source("Other")])
    url = f"/crm/{crm_rule.pk}/status"
    first = client.post(url, body, content_type="application/json", headers=headers)
    assert first.status_code == 404
    crm_rule.traffic_sources.clear()
    second = client.post(url, body, content_type="application/json", headers=headers)
    assert second.status_code == 200
    assert Conversion.objects.get(pk=conversion.pk).status == "approved"


def test_the_readme_recipe_signs_a_call_we_accept(client, crm_rule, conversion):
    """docs/verify_webhook.py's sign(), as the README shows a CRM using it."""
    from tests.postbacks.test_signing import example

    body = json.dumps({"conversion_id": conversion.pk, "status": "rejected"}).encode()
    headers = example.sign(SECRET, "crm-update-1", body)
    answer = client.post(
        f"/crm/{crm_rule.pk}/status", body, content_type="application/json", headers=headers
    )
    assert answer.json() == {"status": "ok", "conversion_id": conversion.pk, "changed": True}


@pytest.mark.django_db(transaction=True)
def test_the_same_call_twice_at_once_changes_once_and_answers_alike():
    """Two deliveries of one CRM update racing (PostgreSQL row locks): the second waits on
    the conversion's lock, then finds the first one's answer."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers: no row locks")
    source = factories.traffic_source()
    rule = factories.rule("https://crm.example/", kind="webhook", signing_secret=SECRET)
    click = factories.click(factories.campaign(source))
    conversion = services.conversion_create(click, payout=None, status="pending")
    body = json.dumps({"conversion_id": conversion.pk, "status": "approved"}).encode()
    headers = signing.sign_headers("msg_race", body.decode(), [SECRET])
    barrier = threading.Barrier(4)
    answers = []

    def call() -> None:
        try:
            barrier.wait()
            answer = Client().post(
                f"/crm/{rule.pk}/status", body, content_type="application/json", headers=headers
            )
            answers.append((answer.status_code, answer.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    expected = (200, {"status": "ok", "conversion_id": conversion.pk, "changed": True})
    assert answers == [expected] * 4
    assert ConversionStatusChange.objects.filter(conversion=conversion).count() == 1
    outcomes = sorted(
        InboundRequest.objects.filter(channel=crm.CHANNEL).values_list("outcome", flat=True)
    )
    assert outcomes == ["duplicate"] * 3 + ["status_changed"]
