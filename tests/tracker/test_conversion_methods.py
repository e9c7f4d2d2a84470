"""Every conversion method through its endpoint: /cv, /cv/<network key>, /cv.gif, /cv.js;
network dialects, dedup modes, currencies, conversion time, test conversions, and the
inbound log row each request leaves (any database)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.http import QueryDict
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from campaigns.models import AffiliateNetwork
from postbacks.models import Delivery
from tests import factories
from tests.conftest import examples
from tracker.forms import ConversionPostbackForm
from tracker.models import Click, Conversion, ExchangeRate, InboundRequest
from tracker.views.common import PIXEL_GIF

pytestmark = pytest.mark.django_db
URL = "https://ts.example/pb?cid={externalid}&p={payout}&c={payout_currency}"
AFFISE_MAP = {
    "click_id": "sub1",
    "payout": "sum",
    "txid": "transactionid",
    "ct": "goal",
}


@pytest.fixture
def click():
    return factories.click(external_id="ext-1")


@pytest.fixture
def network(click) -> AffiliateNetwork:
    return click.offer.affiliate_network


def last_log() -> InboundRequest:
    return InboundRequest.objects.order_by("-id").first()


# --- pixel and script -------------------------------------------------------------------


def test_pixel_reads_the_click_id_cookie_and_always_answers_a_gif(client, click):
    client.cookies[settings.CLICK_COOKIE_NAME] = str(click.pk)
    answer = client.get("/cv.gif", {"payout": "10.00", "txid": "12345"})
    assert answer.status_code == 200 and answer["Content-Type"] == "image/gif"
    assert answer.content == PIXEL_GIF and answer["Cache-Control"].startswith("no-store")
    conversion = Conversion.objects.get()
    assert (conversion.method, conversion.txid, conversion.payout) == (
        "pixel",
        "12345",
        Decimal("10"),
    )
    log = last_log()
    assert (log.channel, log.outcome, log.click_id) == ("pixel", "accepted", str(click.pk))
    assert log.visit_at == click.created_at and log.converted_at == conversion.converted_at


def test_pixel_without_any_click_id_still_answers_a_gif_and_logs_the_error(client):
    answer = client.get("/cv.gif", {"payout": "1"})
    assert answer.status_code == 200 and answer.content == PIXEL_GIF
    log = last_log()
    assert (log.channel, log.outcome, log.error_code) == ("pixel", "invalid", "missing_click_id")
    assert not Conversion.objects.exists()


def test_a_sent_click_id_wins_over_the_cookie(client, click):
    other = factories.click(click.campaign, external_id="ext-2")
    client.cookies[settings.CLICK_COOKIE_NAME] = str(other.pk)
    client.get("/cv.gif", {"click_id": str(click.pk)})
    assert Conversion.objects.get().click_id == click.pk


def test_script_answers_javascript_with_the_outcome(client, click):
    client.cookies[settings.CLICK_COOKIE_NAME] = str(click.pk)
    answer = client.get("/cv.js", {"txid": "S-1", "ct": "sale"})
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/javascript")
    pushed = json.loads(re.search(rb"push\((.*)\);", answer.content).group(1))
    assert pushed == {"status": "ok", "conversion_id": Conversion.objects.get().pk}
    assert Conversion.objects.get().method == "script"
    bad = client.get("/cv.js", {"click_id": "</script><script>alert(1)</script>"})
    assert bad.status_code == 200 and b"</script>" not in bad.content
    assert b"invalid_click_id" in bad.content
    assert last_log().channel == "script"


def test_browser_methods_skip_the_ip_allowlist_but_keep_the_token(client, click, network):
    network.allowed_ips = "203.0.113.7"
    network.postback_token = "s3cret"
    network.save()
    client.get("/cv.gif", {"click_id": str(click.pk), "txid": "1"})
    assert last_log().error_code == "forbidden_token"
    client.get("/cv.gif", {"click_id": str(click.pk), "txid": "1", "token": "s3cret"})
    assert last_log().outcome == "accepted"
    s2s = client.get("/cv", {"click_id": str(click.pk), "txid": "2", "token": "s3cret"})
    assert s2s.status_code == 403 and s2s.json()["error"] == "forbidden_ip"


def test_pixel_and_script_accept_get_only(client, click):
    assert client.post("/cv.gif", {"click_id": str(click.pk)}).status_code == 200
    assert last_log().error_code == "method_not_allowed"
    assert not Conversion.objects.exists()


# --- the network's own postback URL and dialect -------------------------------------------


def test_a_network_dialect_makes_the_same_conversion_as_our_names(client, network):
    network.param_map = {**AFFISE_MAP, "status": "status"}
    network.status_map = {"1": "approved", "2": "pending", "3": "rejected", "5": "pending"}
    network.save()
    ours = factories.click(network.offers.first().campaigns.first(), external_id="a")
    theirs = factories.click(ours.campaign, external_id="b")
    client.get(
        "/cv",
        {
            "click_id": str(ours.pk),
            "payout": "4.20",
            "txid": "T-1",
            "ct": "sale",
            "currency": "EUR",
            "status": "pending",
        },
    )
    answer = client.get(
        f"/cv/{network.key}",
        {
            "sub1": str(theirs.pk),
            "sum": "4.20",
            "transactionid": "T-1",
            "goal": "sale",
            "currency": "EUR",
            "status": "2",
        },
    )
    assert answer.json()["status"] == "ok", answer.json()
    fields = ("txid", "conversion_type", "payout", "currency", "status", "method")
    a, b = (Conversion.objects.filter(click=c).values(*fields).get() for c in (ours, theirs))
    assert (
        a
        == b
        == {
            "txid": "T-1",
            "conversion_type": "sale",
            "payout": Decimal("4.2"),
            "currency": "EUR",
            "status": "pending",
            "method": "s2s",
        }
    )
    assert last_log().network == network
    # An error names the parameter as the network sent it.
    bad = client.get(f"/cv/{network.key}", {"sub1": str(theirs.pk), "sum": "lots", "goal": "x"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_payout"
    assert bad.json()["detail"].startswith("payout (sent as sum): ")


def test_network_fixed_response_and_unknown_key(client, click, network):
    network.response_body = "success=true;"
    network.save()
    answer = client.get(f"/cv/{network.key}", {"click_id": str(click.pk)})
    assert answer.status_code == 200 and answer.content == b"success=true;"
    assert answer["Content-Type"].startswith("text/plain")
    assert Conversion.objects.count() == 1
    # Errors stay JSON 4xx, so the network sees the failure.
    bad = client.get(f"/cv/{network.key}", {"click_id": "nope"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_click_id"
    assert last_log().network == network  # known from the URL even for a bad click ID
    unknown = client.get("/cv/nosuchkey", {"click_id": str(click.pk)})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_network"
    log = last_log()
    assert (log.outcome, log.error_code, log.click_id) == (
        "invalid",
        "unknown_network",
        str(click.pk),
    )


def test_a_network_url_cannot_convert_another_networks_click(client, click):
    other = AffiliateNetwork.objects.create(name="Other")
    answer = client.get(f"/cv/{other.key}", {"click_id": str(click.pk)})
    assert answer.status_code == 403 and answer.json()["error"] == "network_mismatch"
    assert not Conversion.objects.exists()
    assert last_log().outcome == "forbidden"


# --- deduplication ------------------------------------------------------------------------


def test_without_txid_one_conversion_per_click_and_type(client, click):
    def cv(**params):
        return client.get("/cv", {"click_id": str(click.pk), **params}).json()["status"]

    assert cv(ct="lead") == "ok"
    assert cv(ct="LEAD") == "duplicate"
    assert cv(ct="sale") == "ok"
    assert cv(ct="upsell") == "ok"  # several allowed (seeded conversion type)
    assert cv(ct="upsell") == "ok"
    assert cv(ct="rebill") == "ok"
    assert cv(txid="X", ct="upsell") == "ok"
    assert cv(txid="X", ct="upsell") == "duplicate"  # a txid always dedups
    assert Conversion.objects.count() == 6


def test_network_accepting_duplicates(client, click, network):
    network.accept_duplicates = True
    network.save()
    for _ in range(3):
        assert client.get("/cv", {"click_id": str(click.pk)}).json()["status"] == "ok"
    for _ in range(2):
        client.get("/cv", {"click_id": str(click.pk), "txid": "same"})
    assert Conversion.objects.count() == 4
    assert Conversion.objects.filter(txid="same").count() == 1


def test_refund_type_on_an_existing_txid_is_a_status_change(client, click):
    client.get("/cv", {"click_id": str(click.pk), "txid": "ord-1", "ct": "lead"})
    answer = client.get(
        "/cv", {"click_id": str(click.pk), "txid": "ord-1", "ct": "refund", "payout": "-12.50"}
    ).json()
    assert (answer["status"], answer["new_status"]) == ("status_changed", "refunded")
    assert Conversion.objects.get().status == "refunded"


# --- currencies, time, test flag ----------------------------------------------------------


def test_currency_is_an_alias_and_payout_is_kept_in_the_display_currency(client, click):
    ExchangeRate.objects.create(currency="EUR", rate=Decimal("1.10"))
    client.get("/cv", {"click_id": str(click.pk), "payout": "10", "currency": "eur", "txid": "1"})
    conversion = Conversion.objects.get()
    assert (conversion.currency, conversion.display_currency) == ("EUR", "USD")
    assert (conversion.display_payout, conversion.exchange_rate) == (Decimal("11"), Decimal("1.1"))
    ExchangeRate.objects.filter(currency="EUR").update(rate=Decimal("2"))
    conversion.refresh_from_db()
    assert conversion.display_payout == Decimal("11")  # history is not rewritten
    both = {"payout_currency": "GBP", "currency": "EUR", "txid": "2", "payout": "1"}
    client.get("/cv", {"click_id": str(click.pk), **both})
    assert Conversion.objects.get(txid="2").currency == "GBP"
    # No rate: stored, display payout left empty.
    assert Conversion.objects.get(txid="2").display_payout is None


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"currency": "XYZ"}, "invalid_currency"),
        ({"payout_currency": "dollars"}, "invalid_payout_currency"),
        ({"timestamp": "yesterday"}, "invalid_timestamp"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "invalid_timestamp"),
        ({"timestamp": "1999-12-31T00:00:00Z"}, "invalid_timestamp"),
        ({"timestamp": "99999999999999999999"}, "invalid_timestamp"),
        ({"test": "maybe"}, "invalid_test"),
    ],
)
def test_bad_currency_time_and_test_flag(client, click, params, code):
    answer = client.get("/cv", {"click_id": str(click.pk), **params})
    assert answer.status_code == 400 and answer.json()["error"] == code, answer.json()
    assert not Conversion.objects.exists()
    assert (last_log().outcome, last_log().error_code) == ("invalid", code)


def test_conversion_time_from_timestamp(client, click):
    Click.objects.filter(pk=click.pk).update(created_at=timezone.now() - timedelta(days=30))
    when = timezone.now() - timedelta(days=2)
    client.get("/cv", {"click_id": str(click.pk), "txid": "1", "timestamp": when.isoformat()})
    client.get("/cv", {"click_id": str(click.pk), "txid": "2", "timestamp": int(when.timestamp())})
    first, second = Conversion.objects.order_by("txid")
    assert abs(first.converted_at - when) < timedelta(seconds=1)
    assert abs(second.converted_at - when) < timedelta(seconds=1)
    assert first.created_at > first.converted_at  # received now, happened two days ago
    assert last_log().converted_at == second.converted_at
    before = client.get("/cv", {"click_id": str(click.pk), "txid": "3", "timestamp": "2001-01-01"})
    assert before.json()["error"] == "invalid_timestamp"
    assert "before the click" in before.json()["detail"]


def test_test_conversions_fire_test_deliveries(client, click):
    rule = factories.rule(URL)
    answer = client.get("/cv", {"click_id": str(click.pk), "txid": "T", "test": "1"}).json()
    assert answer == {"status": "ok", "conversion_id": answer["conversion_id"], "test": True}
    assert Conversion.objects.get().is_test
    (delivery,) = Delivery.objects.filter(rule=rule)
    assert delivery.is_test
    client.get("/cv", {"click_id": str(click.pk), "txid": "R"})
    assert not Delivery.objects.get(conversion__txid="R").is_test


# --- property: a mapping never changes what a conversion means ----------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda n: n not in ConversionPostbackForm.base_fields and not n.startswith("param")
)


@hsettings(max_examples=examples(60), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(NAMES, min_size=4, max_size=4, unique=True),
    payout=st.decimals(min_value=-1000, max_value=1000, places=2),
    txid=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
    ct=st.sampled_from(["", "lead", "sale", "upsell"]),
)
def test_mapped_names_validate_like_ours(names, payout, txid, ct):
    network = AffiliateNetwork(
        param_map=dict(zip(["click_id", "payout", "txid", "ct"], names, strict=True))
    )
    ours = {"click_id": "3f2a8f0e-3c55-4e6b-9a55-0d3f0f5f0a11", "payout": str(payout)}
    ours |= {"txid": txid, "ct": ct}
    theirs = QueryDict(mutable=True)
    for our_name, their_name in network.param_map.items():
        theirs[their_name] = ours[our_name]
    direct, mapped = (
        ConversionPostbackForm(ours),
        ConversionPostbackForm(network.map_params(theirs)),
    )
    assert direct.is_valid() == mapped.is_valid()
    if direct.is_valid():
        keys = ("payout", "txid", "ct")
        assert [direct.cleaned_data[k] for k in keys] == [mapped.cleaned_data[k] for k in keys]
        assert direct.click_uuid == mapped.click_uuid
    else:
        assert direct.error_code() == mapped.error_code()
