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


def test_test_postback_to_a_receiver_answering_a_gif_pixel(api, receiver, conversion):
    """A 1x1 GIF (NUL bytes inside) is logged as a binary answer, not a 500."""
    gif = bytes.fromhex("4749463839610100010080000000000021f90401000000002c0000000001000100003b")
    receiver.script(Reply(200, body=gif, content_type="image/gif"))
    rule = rule_to(receiver)
    response = api.post(f"{RULES}{rule.pk}/test/", {"conversion": conversion.pk}, format="json")
    assert response.status_code == 200, response.content
    [attempt] = response.json()["attempts"]
    assert (attempt["outcome"], attempt["status_code"]) == ("delivered", 200)
    assert attempt["response_body"].startswith(f"[binary answer: image/gif, {len(gif)} bytes: 47")


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


def test_change_permission_and_the_logs_view_permissions_are_enough_to_test(api_for, receiver):
    rule = rule_to(receiver)
    editor = api_for("view_postbackrule", "change_postbackrule", "view_delivery", "view_attempt")
    response = editor.post(f"{RULES}{rule.pk}/test/", {}, format="json")
    assert response.status_code == 200, response.content
    assert len(receiver.received) == 1


def test_no_permission_no_preview(api_for, receiver):
    rule = rule_to(receiver)
    response = api_for("view_delivery").get(f"{RULES}{rule.pk}/preview/")
    assert response.status_code == 403


# --- a click instead of a conversion -------------------------------------------------------

CLICK_TEMPLATE = "/pb?c={externalid}&id={click.id}&p={payout}&t={txid}&e={event.type}"


@pytest.fixture
def click():
    return factories.click(external_id="clk-7")


def test_preview_of_a_click_rule_with_a_real_click(api, receiver, click):
    rule = factories.rule(f"{receiver.url}{CLICK_TEMPLATE}", event_type="click")
    response = api.get(f"{RULES}{rule.pk}/preview/", {"click": str(click.pk)})
    assert response.status_code == 200, response.content
    answer = response.json()
    # The click's values; no conversion: its macros render empty, as a click rule sends them.
    assert answer["request"]["url"] == f"{receiver.url}/pb?c=clk-7&id={click.pk}&p=&t=&e=click"
    assert answer["macros"] == {
        "externalid": "clk-7", "click.id": str(click.pk), "payout": "", "txid": "",
        "event.type": "click",
    }  # fmt: skip
    assert answer["empty_macros"] == ["payout", "txid"]
    assert answer["conversion"] == f"Click {click.pk}: campaign Campaign, external ID clk-7."
    assert receiver.received == [] and not Delivery.objects.exists()


def test_preview_of_a_conversion_rule_with_a_click_has_sample_conversion_values(
    api, receiver, click
):
    rule = factories.rule(f"{receiver.url}{CLICK_TEMPLATE}")
    answer = api.get(f"{RULES}{rule.pk}/preview/", {"click": str(click.pk)}).json()
    assert answer["request"]["url"] == (
        f"{receiver.url}/pb?c=clk-7&id={click.pk}&p=2.5&t=TX-1001&e=conversion"
    )
    assert answer["conversion"].endswith("with sample conversion values.")


def test_test_postback_of_an_impression_rule_with_a_real_click(api, receiver, click):
    factories.click(click.campaign, external_id="a-newer-click")  # not the one asked for
    rule = factories.rule(f"{receiver.url}{CLICK_TEMPLATE}", event_type="impression")
    response = api.post(f"{RULES}{rule.pk}/test/", {"click": str(click.pk)}, format="json")
    assert response.status_code == 200, response.content
    [got] = receiver.received
    assert got.path == f"/pb?c=clk-7&id={click.pk}&p=&t=&e=impression"
    answer = response.json()
    delivery = Delivery.objects.get()
    assert (delivery.click, delivery.conversion, delivery.is_test) == (click, None, True)
    assert answer["delivery"]["click"] == str(click.pk)
    assert answer["delivery"]["external_id"] == "clk-7"
    assert answer["conversion"].startswith(f"Click {click.pk}: ")


@pytest.mark.parametrize("action", ["preview", "test"])
def test_a_conversion_and_a_click_together_are_refused(api, receiver, conversion, action):
    rule = rule_to(receiver)
    event = {"conversion": conversion.pk, "click": str(conversion.click_id)}
    url = f"{RULES}{rule.pk}/{action}/"
    response = api.get(url, event) if action == "preview" else api.post(url, event, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid" and set(body["detail"]) == {"conversion", "click"}
    assert receiver.received == [] and not Delivery.objects.exists()


@pytest.mark.parametrize("action", ["preview", "test"])
def test_an_unknown_or_malformed_click(api, receiver, action):
    rule = rule_to(receiver)
    url = f"{RULES}{rule.pk}/{action}/"

    def call(event):
        return api.get(url, event) if action == "preview" else api.post(url, event, format="json")

    unknown = "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a99"
    response = call({"click": unknown})
    assert response.status_code == 404
    assert response.json() == {"error": "unknown_click", "detail": f"No click with ID {unknown}."}
    response = call({"click": "not-a-uuid"})
    assert response.status_code == 400
    assert set(response.json()["detail"]) == {"click"}
    assert receiver.received == [] and not Delivery.objects.exists()


# --- secret headers ---------------------------------------------------------------------------

SECRET_HEADERS = "Authorization: Bearer abc123\nX-Api-Key: k-456\nX-Src: {trafficsource.name}"


def test_preview_masks_secret_header_values(api, receiver):
    rule = rule_to(receiver, headers_template=SECRET_HEADERS)
    response = api.get(f"{RULES}{rule.pk}/preview/")
    assert response.status_code == 200, response.content
    assert response.json()["request"]["headers"] == {
        "Idempotency-Key": SAMPLE_DELIVERY_ID,
        "Authorization": "***",
        "X-Api-Key": "***",
        "X-Src": "Taboola",
    }
    assert b"abc123" not in response.content and b"k-456" not in response.content


def test_test_postback_sends_secret_headers_but_does_not_show_them(api, receiver):
    rule = rule_to(receiver, headers_template=SECRET_HEADERS)
    response = api.post(f"{RULES}{rule.pk}/test/", {}, format="json")
    assert response.status_code == 200, response.content
    [got] = receiver.received
    assert (got.headers["Authorization"], got.headers["X-Api-Key"]) == ("Bearer abc123", "k-456")
    headers = response.json()["delivery"]["headers"]
    assert (headers["Authorization"], headers["X-Api-Key"]) == ("***", "***")
    assert headers["X-Src"] == "Taboola"
    assert headers["Idempotency-Key"] == response.json()["delivery"]["public_id"]
    assert b"abc123" not in response.content and b"k-456" not in response.content


def test_the_schema_documents_the_click(api):
    schema = api.get("/api/v1/schema/", {"format": "json"}).json()
    rule_path = schema["paths"]["/api/v1/postback-rules/{id}/preview/"]["get"]
    [click] = [p for p in rule_path["parameters"] if p["name"] == "click"]
    assert click["in"] == "query" and click["schema"]["format"] == "uuid"
    test = schema["paths"]["/api/v1/postback-rules/{id}/test/"]["post"]
    ref = test["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert body["properties"]["click"]["format"] == "uuid"
    assert "unknown_click" in rule_path["description"] and "unknown_click" in test["description"]
