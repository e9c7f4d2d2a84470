"""The public /c and /cv contract: what is recorded, what is answered, what is planned."""

import json
from decimal import Decimal

import pytest

from campaigns.models import Offer
from postbacks.models import Delivery
from tests import factories
from tracker.models import Click, Conversion, InboundRequest

pytestmark = pytest.mark.django_db
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15"


@pytest.fixture
def campaign():
    return factories.campaign()


def do_click(client, campaign, **params):
    params.setdefault("external_id", "tbl-abc")
    return client.get(
        f"/c/{campaign.key}", params, HTTP_USER_AGENT=UA, HTTP_REFERER="https://news.example/a",
        HTTP_X_FORWARDED_FOR="81.2.69.160",
    )  # fmt: skip


def test_click_is_recorded_and_redirected_with_the_click_id(client, campaign, settings):
    settings.TRACKER_PROXY_COUNT = 1
    response = do_click(client, campaign, site="news.example")
    click = Click.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"https://offer.example/?s2={click.pk}"
    assert response.cookies["cf_click_id"].value == str(click.pk)
    assert (click.external_id, click.var1, click.ip) == ("tbl-abc", "news.example", "81.2.69.160")
    assert (click.user_agent, click.referrer) == (UA, "https://news.example/a")
    assert click.traffic_source == campaign.traffic_source


def test_unfilled_placeholder_and_malformed_ip_do_not_break_a_click(client, campaign, settings):
    settings.TRACKER_PROXY_COUNT = 1
    response = client.get(
        f"/c/{campaign.key}", {"external_id": "{click_id}"}, HTTP_X_FORWARDED_FOR="999.1.1.1"
    )
    assert response.status_code == 302
    click = Click.objects.get()
    assert click.external_id == ""
    assert click.ip == "127.0.0.1"


def test_unknown_or_inactive_campaign_is_404(client, campaign):
    assert client.get("/c/nope").json()["error"] == "unknown_campaign"
    campaign.is_active = False
    campaign.save()
    assert client.get(f"/c/{campaign.key}").status_code == 404


def test_campaign_without_active_offer_is_503(client, campaign):
    Offer.objects.update(is_active=False)
    response = client.get(f"/c/{campaign.key}")
    assert (response.status_code, response.json()["error"]) == (503, "no_offer")


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "missing_click_id"),
        ({"click_id": "not-a-uuid"}, 400, "invalid_click_id"),
        ({"click_id": "00000000-0000-4000-8000-000000000000"}, 404, "unknown_click_id"),
        ({"click_id": "CLICK", "payout": "abc"}, 400, "invalid_payout"),
        ({"click_id": "CLICK", "payout": "NaN"}, 400, "invalid_payout"),
        ({"click_id": "CLICK", "payout": "1e12"}, 400, "invalid_payout"),
        ({"click_id": "CLICK", "status": "won"}, 400, "invalid_status"),
        ({"click_id": "CLICK", "payout_currency": "dollars"}, 400, "invalid_payout_currency"),
        ({"click_id": "CLICK", "txid": "x" * 256}, 400, "invalid_txid"),
        ({"click_id": "CLICK", "cf_click_id": "00000000-0000-4000-8000-000000000000"}, 400,
         "invalid_click_id"),
    ],
)  # fmt: skip
def test_bad_postbacks_get_a_precise_4xx_and_are_logged(client, params, status, code):
    click = factories.click()
    params = {k: str(click.pk) if v == "CLICK" else v for k, v in params.items()}
    response = client.get("/cv", params)
    assert response.status_code == status
    assert response.json()["error"] == code
    assert response.json()["detail"]
    assert not Conversion.objects.exists()
    logged = InboundRequest.objects.get()
    expected = {403: "forbidden", 404: "unknown_click"}.get(status, "invalid")
    assert (logged.outcome, logged.error_code, logged.response_status) == (expected, code, status)


def test_conversion_is_registered_with_all_fields(client):
    click = factories.click()
    response = client.get(
        "/cv",
        {"cf_click_id": str(click.pk), "payout": "2.35", "txid": "T-1", "ct": "sale",
         "status": "pending", "payout_currency": "eur", "param1": "jane", "param20": "z"},
    )  # fmt: skip
    assert response.status_code == 200
    conversion = Conversion.objects.get()
    assert response.json() == {"status": "ok", "conversion_id": conversion.pk}
    assert (conversion.payout, conversion.currency, conversion.txid) == (
        Decimal("2.35"), "EUR", "T-1",
    )  # fmt: skip
    assert (conversion.conversion_type, conversion.status) == ("sale", "pending")
    assert conversion.params == {"param1": "jane", "param20": "z"}
    assert InboundRequest.objects.get().outcome == "accepted"


def test_post_form_and_json_bodies(client):
    click = factories.click()
    form = client.post("/cv", {"click_id": str(click.pk), "txid": "F"})
    body = json.dumps({"click_id": str(click.pk), "txid": "J", "payout": 4.5})
    as_json = client.post("/cv", body, content_type="application/json")
    broken = client.post("/cv", "{nope", content_type="application/json")
    assert (form.status_code, as_json.status_code) == (200, 200)
    assert Conversion.objects.get(txid="J").payout == Decimal("4.5")
    assert (broken.status_code, broken.json()["error"]) == (400, "invalid_json")
    assert client.put("/cv").status_code == 405


def test_payout_modes(client):
    manual = factories.offer("Manual", payout=Decimal("7"), currency="GBP", payout_mode="manual")
    auto = factories.offer("Auto", payout=Decimal("1.25"))
    manual_click = factories.click(factories.campaign(None, manual, name="m"))
    auto_click = factories.click(
        factories.campaign(factories.traffic_source("Other"), auto, name="a")
    )
    client.get("/cv", {"click_id": str(manual_click.pk), "payout": "2.35", "txid": "M"})
    client.get("/cv", {"click_id": str(auto_click.pk), "txid": "A"})
    manual_conversion = Conversion.objects.get(txid="M")
    assert (manual_conversion.payout, manual_conversion.currency) == (Decimal("7"), "GBP")
    assert manual_conversion.network_payout == Decimal("2.35")
    assert Conversion.objects.get(txid="A").payout == Decimal("1.25")


def test_duplicates_without_and_with_txid(client):
    click = factories.click()
    answers = [
        client.get("/cv", {"click_id": str(click.pk), **extra}).json()["status"]
        for extra in ({}, {}, {"txid": "T"}, {"txid": "T"}, {"txid": "T2"})
    ]
    assert answers == ["ok", "duplicate", "ok", "duplicate", "ok"]
    assert Conversion.objects.count() == 3
    assert InboundRequest.objects.filter(outcome="duplicate").count() == 2


def test_conversion_plans_the_exact_postback_in_its_transaction(
    client, django_capture_on_commit_callbacks
):
    click = factories.click(external_id="tbl a&b")
    factories.rule("https://ts.example" + factories.TABOOLA_PATH, sources=[click.traffic_source])
    factories.rule("https://other.example/?c={externalid}", sources=[factories.traffic_source("X")])
    with django_capture_on_commit_callbacks() as callbacks:
        client.get("/cv", {"click_id": str(click.pk), "payout": "2.350", "txid": "T-1"})
    delivery = Delivery.objects.get()
    assert delivery.url == (
        "https://ts.example/actions-handler/log/3/s2s-action?click-id=tbl%20a%26b&name=lead"
        "&revenue=2.35&currency=USD"
    )
    assert (delivery.status, delivery.event_type, delivery.attempt_count) == (
        "scheduled", "conversion", 0,
    )  # fmt: skip
    assert len(callbacks) == 1
