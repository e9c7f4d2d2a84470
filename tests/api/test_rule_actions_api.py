"""The rule preview and test postback through the API (the admin form's preview and test
button, ``postbacks.preview``), against a real HTTP receiver."""

from __future__ import annotations

from decimal import Decimal

import pytest

from postbacks.models import Attempt, Delivery
from postbacks.preview import SAMPLE_DELIVERY_ID
from postbacks.receiver import Reply
from tests import factories
from tracker.models import Conversion

pytestmark = pytest.mark.django_db

RULES = "/api/v1/postback-rules/"
TEMPLATE = "/pb?c={externalid}&p={payout}&t={txid}&token={conversion.id}"


@pytest.fixture
def conversion():
    click = factories.click(external_id="ext-42")
    return Conversion.objects.create(
        click=click, txid="TX-9", conversion_type="sale", status="approved",
        payout=Decimal("4.20"), currency="EUR",
    )  # fmt: skip


def rule_to(receiver, **fields):
    return factories.rule(f"{receiver.url}{TEMPLATE}", **fields)


# --- preview -----------------------------------------------------------------------------


def test_preview_with_sample_values(api, receiver):
    rule = rule_to(receiver, headers_template="X-Src: {trafficsource.name}")
    response = api.get(f"{RULES}{rule.pk}/preview/")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["request"] == {
        "method": "GET",
        "url": f"{receiver.url}/pb?c=ts-click-123&p=2.5&t=TX-1001&token=1001",
        "headers": {"Idempotency-Key": SAMPLE_DELIVERY_ID, "X-Src": "Taboola"},
        "body": "",
    }
    assert answer["macros"] == {
        "externalid": "ts-click-123", "payout": "2.5", "txid": "TX-1001",
        "conversion.id": "1001", "trafficsource.name": "Taboola",
    }  # fmt: skip
    assert answer["conversion"] == "Sample values (no real conversion)."
    assert answer["errors"] == [] and answer["empty_macros"] == []
    assert receiver.received == [] and not Delivery.objects.exists()  # nothing sent


def test_preview_with_a_real_conversion(api, receiver, conversion):
    rule = rule_to(receiver)
    answer = api.get(f"{RULES}{rule.pk}/preview/", {"conversion": conversion.pk}).json()
    assert answer["request"]["url"] == (
        f"{receiver.url}/pb?c=ext-42&p=4.2&t=TX-9&token={conversion.pk}"
    )
    assert answer["macros"] == {
        "externalid": "ext-42", "payout": "4.2", "txid": "TX-9",
        "conversion.id": str(conversion.pk),
    }  # fmt: skip
    assert answer["conversion"].startswith(f"Conversion #{conversion.pk}: sale, approved")


def test_preview_warns_like_the_admin(api, receiver):
    rule = factories.rule(f"{receiver.url}/pb?p={{payout}}&x={{var:site}}")
    answer = api.get(f"{RULES}{rule.pk}/preview/").json()
    assert any("No {externalid} macro" in w for w in answer["warnings"])
    assert answer["macros"]["var:site"] == "site-value"


def test_preview_lists_empty_macros(api, receiver, conversion):
    rule = factories.rule(f"{receiver.url}/pb?c={{externalid}}&s={{var:site}}")
    answer = api.get(f"{RULES}{rule.pk}/preview/", {"conversion": conversion.pk}).json()
    assert answer["macros"] == {"externalid": "ext-42", "var:site": ""}
    assert answer["empty_macros"] == ["var:site"]


def test_preview_of_an_unknown_conversion_is_404(api, receiver):
    rule = rule_to(receiver)
    response = api.get(f"{RULES}{rule.pk}/preview/", {"conversion": 999999})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_conversion"
    response = api.get(f"{RULES}{rule.pk}/preview/", {"conversion": "abc"})
    assert response.status_code == 400 and response.json()["error"] == "invalid"


def test_preview_of_an_unknown_rule_is_404(api):
    response = api.get(f"{RULES}999999/preview/")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


# --- test postback -----------------------------------------------------------------------


def test_test_postback_reaches_the_receiver(api, receiver, conversion):
    receiver.script(Reply(200, body='{"ok":true}'))
    rule = rule_to(receiver)
    response = api.post(f"{RULES}{rule.pk}/test/", {"conversion": conversion.pk}, format="json")
    assert response.status_code == 200, response.content
    [got] = receiver.received
    assert got.path == f"/pb?c=ext-42&p=4.2&t=TX-9&token={conversion.pk}"  # as rendered
    assert got.query == {"c": "ext-42", "p": "4.2", "t": "TX-9", "token": str(conversion.pk)}
    answer = response.json()
    delivery = Delivery.objects.get()
    assert delivery.is_test and delivery.rule == rule and delivery.conversion == conversion
    assert answer["delivery"]["id"] == delivery.pk
    assert answer["delivery"]["is_test"] is True
    assert answer["delivery"]["status"] == "delivered"
    assert answer["delivery"]["last_status_code"] == 200
    assert answer["delivery"]["txid"] == "TX-9"
    [attempt] = answer["attempts"]
    assert attempt["id"] == Attempt.objects.get(delivery=delivery).pk
    assert (attempt["outcome"], attempt["status_code"]) == ("delivered", 200)
    assert attempt["url"] == f"{receiver.url}/pb?c=ext-42&p=4.2&t=TX-9&token=***"  # masked
    assert attempt["response_body"] == '{"ok":true}'
    assert attempt["error"] == "" and attempt["duration_ms"] >= 0
    assert answer["attempts_url"].endswith(f"/api/v1/attempts/?delivery={delivery.pk}")
    listed = api.get(answer["attempts_url"]).json()["results"]
    assert [row["id"] for row in listed] == [attempt["id"]]


def test_test_postback_with_samples_reports_a_failure(api, receiver):
    receiver.script(Reply(500, body="boom"))
    rule = rule_to(receiver)
    response = api.post(f"{RULES}{rule.pk}/test/", {}, format="json")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["delivery"]["status"] == "failed" and answer["delivery"]["is_test"]
    [attempt] = answer["attempts"]
    assert (attempt["outcome"], attempt["status_code"]) == ("failed", 500)
    assert "HTTP 500" in attempt["error"]
    [got] = receiver.received  # a test is never retried
    assert got.query["c"] == "ts-click-123" and got.query["p"] == "2.5"


def test_test_postback_of_an_unknown_conversion_is_404(api, receiver):
    rule = rule_to(receiver)
    response = api.post(f"{RULES}{rule.pk}/test/", {"conversion": 999999}, format="json")
    assert response.status_code == 404
    assert response.json() == {
        "error": "unknown_conversion",
        "detail": "No conversion with id 999999.",
    }
    assert receiver.received == [] and not Delivery.objects.exists()


def test_test_postback_refuses_unknown_fields(api, receiver):
    rule = rule_to(receiver)
    response = api.post(f"{RULES}{rule.pk}/test/", {"conversoin": 1}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == {"conversoin": ["Unknown field."]}
    assert receiver.received == []


def test_test_postback_of_an_untestable_kind_is_400(api, receiver):
    rule = rule_to(receiver)
    rule.__class__.objects.filter(pk=rule.pk).update(kind="carrier-pigeon")
    response = api.post(f"{RULES}{rule.pk}/test/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "untestable_kind"
    assert receiver.received == [] and not Delivery.objects.exists()


def test_test_postback_of_a_rule_with_template_errors_is_400(api, receiver):
    rule = rule_to(receiver)
    rule.__class__.objects.filter(pk=rule.pk).update(
        url_template=f"{receiver.url}/pb?c={{externalidd}}"
    )
    response = api.post(f"{RULES}{rule.pk}/test/", {}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_rule"
    assert body["detail"][0] == "Nothing was sent."
    assert any("externalidd" in message for message in body["detail"][1:])
    assert receiver.received == [] and not Delivery.objects.exists()


# --- permissions -------------------------------------------------------------------------


def test_a_viewer_can_preview_but_not_test(api_for, receiver):
    rule = rule_to(receiver)
    viewer = api_for("view_postbackrule")
    assert viewer.get(f"{RULES}{rule.pk}/preview/").status_code == 200
    response = viewer.post(f"{RULES}{rule.pk}/test/", {}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert receiver.received == [] and not Delivery.objects.exists()


def test_change_permission_is_enough_to_test(api_for, receiver):
    rule = rule_to(receiver)
    editor = api_for("view_postbackrule", "change_postbackrule")
    response = editor.post(f"{RULES}{rule.pk}/test/", {}, format="json")
    assert response.status_code == 200, response.content
    assert len(receiver.received) == 1


def test_no_permission_no_preview(api_for, receiver):
    rule = rule_to(receiver)
    response = api_for("view_delivery").get(f"{RULES}{rule.pk}/preview/")
    assert response.status_code == 403
