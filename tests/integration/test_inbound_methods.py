"""Every conversion method over real HTTP (live server on PostgreSQL), each firing its
postback through a real Celery worker to a local receiver: S2S GET and POST JSON, the
network's own postback URL speaking its dialect, the image pixel and the script reading
the click-ID cookie a real click set."""

from __future__ import annotations

import pytest
import requests

from postbacks.models import Delivery
from tests.conftest import campaign_with_rule, click_id_from, wait_until
from tracker.models import Conversion, InboundRequest

pytestmark = pytest.mark.integration
PATH = "/pb?cid={externalid}&txid={txid}&p={payout}&cur={payout_currency}&s={status}"


def setup(receiver):
    """A campaign with a rule to ``receiver``; returns it and its offer's network."""
    campaign, _rule = campaign_with_rule(receiver.url + PATH)
    return campaign, campaign.campaign_offers.get().offer.affiliate_network


def visit(session: requests.Session, base: str, campaign, external_id: str) -> str:
    """A real click: returns the click ID; the session keeps the click-ID cookie."""
    answer = session.get(
        f"{base}/c/{campaign.key}", params={"external_id": external_id}, allow_redirects=False
    )
    assert answer.status_code == 302
    return click_id_from(answer)


def received_queries(receiver, count: int) -> list[dict[str, str]]:
    return sorted((r.query for r in receiver.wait_for(count)), key=lambda q: q["cid"])


def test_every_method_registers_and_fires(worker, receiver, live_server):
    campaign, network = setup(receiver)
    network.param_map = {"click_id": "sub1", "payout": "sum", "txid": "transactionid"}
    network.status_map = {"1": "approved", "2": "pending", "3": "rejected"}
    network.response_body = "success=true;"
    network.save()
    base = live_server.url

    s2s = requests.Session()
    click_get = visit(s2s, base, campaign, "ext-get")
    answer = s2s.get(f"{base}/cv", params={"click_id": click_get, "payout": "2.5", "txid": "G"})
    assert answer.text == "success=true;"  # the network of the click's offer answers so

    click_post = visit(s2s, base, campaign, "ext-post")
    answer = s2s.post(
        f"{base}/cv",
        json={"click_id": click_post, "payout": 3, "txid": "P", "currency": "EUR"},
    )
    assert answer.status_code == 200

    click_dialect = visit(s2s, base, campaign, "ext-dialect")
    answer = requests.get(
        f"{base}/cv/{network.key}",
        params={"sub1": click_dialect, "sum": "4", "transactionid": "D", "status": "1"},
        timeout=10,
    )
    assert (answer.status_code, answer.text) == (200, "success=true;")

    browser = requests.Session()  # a visitor: the cookie set by /c goes with the pixel
    visit(browser, base, campaign, "ext-pixel")
    pixel = browser.get(f"{base}/cv.gif", params={"payout": "5", "txid": "X"}, timeout=10)
    assert (pixel.status_code, pixel.headers["Content-Type"]) == (200, "image/gif")

    other = requests.Session()
    visit(other, base, campaign, "ext-script")
    script = other.get(f"{base}/cv.js", params={"payout": "6", "txid": "J"}, timeout=10)
    assert script.status_code == 200 and '"status": "ok"' in script.text

    assert received_queries(receiver, 5) == [
        {"cid": "ext-dialect", "txid": "D", "p": "4", "cur": "USD", "s": "approved"},
        {"cid": "ext-get", "txid": "G", "p": "2.5", "cur": "USD", "s": "approved"},
        {"cid": "ext-pixel", "txid": "X", "p": "5", "cur": "USD", "s": "approved"},
        {"cid": "ext-post", "txid": "P", "p": "3", "cur": "EUR", "s": "approved"},
        {"cid": "ext-script", "txid": "J", "p": "6", "cur": "USD", "s": "approved"},
    ]
    methods = dict(Conversion.objects.values_list("txid", "method"))
    assert methods == {"G": "s2s", "P": "s2s", "D": "s2s", "X": "pixel", "J": "script"}
    log = InboundRequest.objects.filter(outcome="accepted")
    assert sorted(log.values_list("channel", flat=True)) == sorted(
        ["s2s", "s2s", "s2s", "pixel", "script"]
    )
    assert all(row.network_id == network.pk and row.visit_at for row in log)
    assert wait_until(lambda: Delivery.objects.filter(status="delivered").count() == 5, timeout=30)


def test_browser_methods_without_a_cookie_answer_and_log(worker, live_server):
    base = live_server.url
    pixel = requests.get(f"{base}/cv.gif", params={"txid": "1"}, timeout=10)
    script = requests.get(f"{base}/cv.js", params={"txid": "1"}, timeout=10)
    assert pixel.status_code == script.status_code == 200
    assert "missing_click_id" in script.text
    log = InboundRequest.objects.order_by("id")
    assert [(r.channel, r.error_code) for r in log] == [
        ("pixel", "missing_click_id"),
        ("script", "missing_click_id"),
    ]
    assert not Conversion.objects.exists()
