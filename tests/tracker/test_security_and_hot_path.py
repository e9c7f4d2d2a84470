"""Network token and IP allowlist on /cv, visitor IPs, and the statements of the hot paths."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns import services as campaign_cache
from campaigns.models import AffiliateNetwork, TrafficSourceParameter
from postbacks.models import Delivery, EventType
from tests import factories
from tests.conftest import wait_until
from tracker.models import Click, Conversion, InboundRequest

TOKEN = "s3cret-Token-0123456789abcdef"


@pytest.fixture
def network(db):
    return AffiliateNetwork.objects.create(name="Secured")


@pytest.fixture
def click(network):
    offer = factories.offer("Secured offer", affiliate_network=network)
    return factories.click(factories.campaign(None, offer))


def cv(client, click, **params):
    headers = {
        k: params.pop(k) for k in list(params) if k.startswith("HTTP_") or k == "REMOTE_ADDR"
    }
    return client.get("/cv", {"click_id": str(click.pk), **params}, **headers)


@pytest.mark.django_db
def test_token_is_required_when_the_network_has_one(client, network, click):
    network.postback_token = TOKEN
    network.save()
    answers = [
        cv(client, click, txid="none"),
        cv(client, click, txid="wrong", token="nope"),
        cv(client, click, txid="short", token=TOKEN[:-1]),
    ]
    assert [(a.status_code, a.json()["error"]) for a in answers] == [(403, "forbidden_token")] * 3
    assert not Conversion.objects.exists()
    assert InboundRequest.objects.filter(error_code="forbidden_token").count() == 3
    ok_query = cv(client, click, txid="q", token=TOKEN)
    ok_header = cv(client, click, txid="h", HTTP_X_POSTBACK_TOKEN=TOKEN)
    assert (ok_query.status_code, ok_header.status_code) == (200, 200)
    logged = InboundRequest.objects.get(conversion_id=ok_query.json()["conversion_id"])
    assert TOKEN not in logged.query and "token=***" in logged.query


@pytest.mark.django_db
def test_token_in_json_body_is_accepted_and_masked(client, network, click):
    network.postback_token = TOKEN
    network.save()
    body = f'{{"click_id": "{click.pk}", "token": "{TOKEN}"}}'
    response = client.post("/cv", body, content_type="application/json")
    assert response.status_code == 200
    assert TOKEN not in InboundRequest.objects.get().body


@pytest.mark.django_db
def test_ip_allowlist(client, network, click):
    network.allowed_ips = "203.0.113.7\n198.51.100.0/24, 2001:db8::/32"
    network.save()
    refused = cv(client, click, txid="a", REMOTE_ADDR="192.0.2.1")
    spoofed = cv(
        client, click, txid="b", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="203.0.113.7"
    )
    assert [(r.status_code, r.json()["error"]) for r in (refused, spoofed)] == [
        (403, "forbidden_ip"), (403, "forbidden_ip"),
    ]  # fmt: skip
    allowed = [
        cv(client, click, txid=ip, REMOTE_ADDR=ip)
        for ip in ("203.0.113.7", "198.51.100.200", "2001:db8::1")
    ]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert InboundRequest.objects.filter(error_code="forbidden_ip").count() == 2


@pytest.mark.django_db
def test_forwarded_for_is_read_only_behind_the_configured_proxies(client, settings):
    campaign = factories.campaign()

    def ip_of(forwarded: str | None) -> str | None:
        headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
        response = client.get(f"/c/{campaign.key}", REMOTE_ADDR="10.0.0.9", **headers)
        return Click.objects.get(pk=response.cookies["cf_click_id"].value).ip

    assert ip_of("81.2.69.160") == "10.0.0.9"
    settings.TRACKER_PROXY_COUNT = 1
    assert ip_of("81.2.69.160") == "81.2.69.160"
    assert ip_of("6.6.6.6, 81.2.69.160") == "81.2.69.160"
    assert ip_of("not-an-ip") == "10.0.0.9"
    assert ip_of(None) == "10.0.0.9"
    settings.TRACKER_PROXY_COUNT = 2
    assert ip_of("6.6.6.6, 81.2.69.160, 10.0.0.2") == "81.2.69.160"


def sql_of(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"].split(" ", 1)[0].upper() for q in captured.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_click_without_click_rules_is_one_insert(client):
    campaign = factories.campaign()
    client.get(f"/c/{campaign.key}", {"external_id": "warm-up"})
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/c/{campaign.key}", {"external_id": "x", "site": "s"})
    assert response.status_code == 302
    assert sql_of(captured) == ["INSERT"]
    assert Click.objects.get(external_id="x").var1 == "s"


@pytest.mark.django_db
def test_click_statements_with_django_assert_num_queries(client, django_assert_num_queries):
    campaign = factories.campaign()
    factories.rule("https://ts.example/?c={externalid}")  # a conversion rule: not for clicks
    client.get(f"/c/{campaign.key}")
    with django_assert_num_queries(1):
        client.get(f"/c/{campaign.key}")


@pytest.mark.django_db(transaction=True)
def test_click_with_a_click_rule_writes_its_delivery_in_one_transaction(client):
    campaign = factories.campaign()
    factories.rule("https://ts.example/?c={externalid}", event_type=EventType.CLICK)
    client.get(f"/c/{campaign.key}", {"external_id": "warm-up"})
    with CaptureQueriesContext(connection) as captured:
        client.get(f"/c/{campaign.key}", {"external_id": "x"})
    assert sql_of(captured) == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    assert Delivery.objects.get(click__external_id="x").url == "https://ts.example/?c=x"


@pytest.mark.django_db(transaction=True)
def test_conversion_is_one_transaction_with_one_commit(client):
    first, second = factories.click(), None
    campaign = first.campaign
    second = factories.click(campaign)
    factories.rule("https://ts.example/?c={externalid}&p={payout}")
    client.get("/cv", {"click_id": str(first.pk), "txid": "warm-up"})
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/cv", {"click_id": str(second.pk), "txid": "T", "payout": "2"})
    assert response.json()["status"] == "ok"
    statements = sql_of(captured)
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    assert statements.count("COMMIT") == 1 and "SAVEPOINT" not in statements
    tables = [q["sql"].split('"')[1] for q in captured.captured_queries if "INTO" in q["sql"]]
    assert tables == ["tracker_conversion", "postbacks_delivery", "tracker_inboundrequest"]
    assert statements.count("SELECT") == 1
    delivery = Delivery.objects.get(conversion_id=response.json()["conversion_id"])
    assert delivery.event_type == EventType.CONVERSION
    assert InboundRequest.objects.filter(conversion_id=delivery.conversion_id).count() == 1


@pytest.mark.django_db
@pytest.mark.django_db(transaction=True)  # the reload's thread reads committed rows
def test_campaign_cache_is_cleared_by_saves_and_expires(client, settings):
    campaign = factories.campaign()
    assert client.get(f"/c/{campaign.key}").status_code == 302
    campaign.is_active = False
    campaign.save()
    assert client.get(f"/c/{campaign.key}").status_code == 404
    campaign.is_active = True
    campaign.save()
    assert client.get(f"/c/{campaign.key}").status_code == 302
    TrafficSourceParameter.objects.filter(traffic_source=campaign.traffic_source).update(
        param="subid"
    )  # no signal: reaches the cache when it expires
    client.get(f"/c/{campaign.key}", {"subid": "cached"})
    assert Click.objects.filter(var1="cached").count() == 0
    settings.TRACKER_CAMPAIGN_CACHE_SECONDS = 0
    client.get(f"/c/{campaign.key}", {"subid": "stale"})  # the cached copy; a thread reloads
    assert wait_until(lambda: not campaign_cache._refreshing, timeout=10)
    client.get(f"/c/{campaign.key}", {"subid": "fresh"})
    assert Click.objects.filter(var1="fresh").count() == 1
