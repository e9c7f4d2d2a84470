"""The visitor's path through a campaign: /c (HEAD, paused, no offer, lander), /lp/click,
the click-ID cookie, the external-ID limit on /c and /i, and the campaign cache."""

from __future__ import annotations

import uuid

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from campaigns import services as campaign_cache
from campaigns.models import Campaign, Lander, Offer
from postbacks.models import Delivery, EventType
from tests import factories
from tests.conftest import wait_until
from tracker.models import EXTERNAL_ID_MAX, Click, Impression

FALLBACK = "https://fallback.example/home"
LANDER_URL = "https://lander.example/pre?cid={click_id}&ext={externalid}"
COOKIE = settings.CLICK_COOKIE_NAME


@pytest.fixture
def campaign(db) -> Campaign:
    return factories.campaign()


@pytest.fixture
def lander(db) -> Lander:
    return Lander.objects.create(name="Pre-sell", url=LANDER_URL)


@pytest.fixture
def lander_campaign(campaign, lander) -> Campaign:
    campaign.lander = lander
    campaign.fallback_url = FALLBACK
    campaign.save()
    return campaign


def pause(campaign: Campaign, fallback: str = "") -> None:
    campaign.is_active = False
    campaign.fallback_url = fallback
    campaign.save()


# --- HEAD -------------------------------------------------------------------------------


def test_head_is_answered_like_get_without_recording(client, campaign):
    head = client.head(f"/c/{campaign.key}", {"external_id": "bot"})
    assert not Click.objects.exists()
    get = client.get(f"/c/{campaign.key}", {"external_id": "human"})
    click = Click.objects.get()
    assert (head.status_code, get.status_code) == (302, 302)
    assert head["Location"].startswith("https://offer.example/?s2=")
    assert get["Location"] == f"https://offer.example/?s2={click.pk}"
    # The HEAD answer carries a click ID too, one that was never recorded, and no cookie.
    head_id = uuid.UUID(head["Location"].rpartition("=")[2])
    assert head_id != click.pk and not Click.objects.filter(pk=head_id).exists()
    assert COOKIE not in head.cookies and COOKIE in get.cookies
    assert head.content == b""


def test_head_errors_have_the_get_status_and_no_body(client, campaign):
    unknown = client.head("/c/nope")
    assert (unknown.status_code, unknown.content) == (404, b"")
    assert unknown["Content-Type"] == "application/json"
    too_long = client.head(f"/c/{campaign.key}", {"external_id": "x" * (EXTERNAL_ID_MAX + 1)})
    assert too_long.status_code == 400
    assert client.head(f"/i/{campaign.key}").status_code == 200
    assert not Click.objects.exists() and not Impression.objects.exists()


def test_head_on_a_lander_campaign_points_at_the_lander(client, lander_campaign):
    response = client.head(f"/c/{lander_campaign.key}", {"external_id": "e"})
    assert response["Location"].startswith("https://lander.example/pre?cid=")
    assert response["Location"].endswith("&ext=e")
    assert not Click.objects.exists()


def test_other_methods_are_refused(client, campaign):
    for path in (f"/c/{campaign.key}", f"/i/{campaign.key}", "/lp/click"):
        response = client.post(path)
        assert (response.status_code, response.json()["error"]) == (405, "method_not_allowed")
        assert response["Allow"] == "GET, HEAD"


# --- paused campaigns and the fallback URL ------------------------------------------------


def test_paused_campaign_goes_to_its_fallback_without_a_click(client, campaign):
    pause(campaign, FALLBACK)
    response = client.get(f"/c/{campaign.key}", {"external_id": "e"})
    assert (response.status_code, response["Location"]) == (302, FALLBACK)
    assert COOKIE not in response.cookies
    assert not Click.objects.exists()


def test_paused_campaign_without_fallback_is_404(client, campaign):
    pause(campaign)
    response = client.get(f"/c/{campaign.key}")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_campaign")
    assert "paused" in response.json()["detail"]
    assert not Click.objects.exists()


def test_paused_campaign_records_no_impression(client, campaign):
    pause(campaign, FALLBACK)
    response = client.get(f"/i/{campaign.key}")
    assert (response.status_code, response.json()["error"]) == (404, "unknown_campaign")
    assert not Impression.objects.exists()


def test_no_active_offer_goes_to_the_fallback_else_503(client, campaign):
    Offer.objects.update(is_active=False)
    campaign_cache.cache_clear()  # update() sends no signal
    assert client.get(f"/c/{campaign.key}").json()["error"] == "no_offer"
    campaign.fallback_url = FALLBACK
    campaign.save()
    response = client.get(f"/c/{campaign.key}")
    assert (response.status_code, response["Location"]) == (302, FALLBACK)
    assert not Click.objects.exists()


# --- the campaign cache -------------------------------------------------------------------


def test_cache_sees_a_pause_at_once_and_keeps_paused_campaigns(
    client, campaign, django_assert_num_queries
):
    assert client.get(f"/c/{campaign.key}").status_code == 302
    pause(campaign, FALLBACK)  # the save signal clears this process's cache
    assert client.get(f"/c/{campaign.key}")["Location"] == FALLBACK
    with django_assert_num_queries(0):  # the paused campaign is cached too
        assert client.get(f"/c/{campaign.key}")["Location"] == FALLBACK
    campaign.is_active = True
    campaign.save()
    assert client.get(f"/c/{campaign.key}")["Location"].startswith("https://offer.example/")


@pytest.mark.django_db(transaction=True)  # the reload's thread reads committed rows
def test_cache_sees_a_pause_without_a_signal_when_it_expires(client, campaign, settings):
    assert client.get(f"/c/{campaign.key}").status_code == 302
    Campaign.objects.filter(pk=campaign.pk).update(is_active=False, fallback_url=FALLBACK)
    assert client.get(f"/c/{campaign.key}").status_code == 302  # still cached
    assert Click.objects.count() == 2
    settings.TRACKER_CAMPAIGN_CACHE_SECONDS = 0
    # Expired: this click still gets the cached copy while a thread loads the campaign.
    assert client.get(f"/c/{campaign.key}").status_code == 302
    assert wait_until(lambda: not campaign_cache._refreshing, timeout=10)
    assert client.get(f"/c/{campaign.key}")["Location"] == FALLBACK
    assert Click.objects.count() == 3


def test_unknown_keys_are_not_cached(client, campaign):
    for key in ("nope-1", "nope-2"):
        assert client.get(f"/c/{key}").status_code == 404
    assert campaign_cache.campaign_for_click("nope-1") is None
    assert set(campaign_cache._campaigns) == set()


def test_lander_edit_clears_the_cache(client, lander_campaign, lander):
    client.get(f"/c/{lander_campaign.key}")
    lander.url = "https://other-lander.example/?c={click_id}"
    lander.save()
    response = client.get(f"/c/{lander_campaign.key}")
    assert response["Location"].startswith("https://other-lander.example/?c=")


# --- landers and /lp/click ----------------------------------------------------------------


def test_lander_flow_end_to_end_with_the_cookie(client, lander_campaign, lander):
    response = client.get(f"/c/{lander_campaign.key}", {"external_id": "tb-1", "site": "s"})
    click = Click.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"https://lander.example/pre?cid={click.pk}&ext=tb-1"
    assert (click.lander, click.offer, click.lander_clicked_at) == (
        lander,
        Offer.objects.get(),
        None,
    )
    assert response.cookies[COOKIE].value == str(click.pk)
    # The lander's call-to-action: plain /lp/click, the click ID comes from the cookie.
    onward = client.get("/lp/click")
    assert (onward.status_code, onward["Location"]) == (
        302,
        f"https://offer.example/?s2={click.pk}",
    )
    click.refresh_from_db()
    first = click.lander_clicked_at
    assert first is not None
    client.get("/lp/click")
    click.refresh_from_db()
    assert click.lander_clicked_at == first  # only the first time


def test_lp_click_with_the_click_id_parameter(client, lander_campaign):
    factories.rule("https://ts.example/?c={externalid}", event_type=EventType.CLICK)
    client.get(f"/c/{lander_campaign.key}", {"external_id": "x"})
    click = Click.objects.get()
    other = factories.click(lander_campaign)
    client.cookies[COOKIE] = str(click.pk)
    for name in ("click_id", "cf_click_id"):
        response = client.get("/lp/click", {name: str(other.pk)})
        assert response["Location"] == f"https://offer.example/?s2={other.pk}"
        # The parameter wins over the cookie, and the cookie follows it.
        assert response.cookies[COOKIE].value == str(other.pk)
        client.cookies[COOKIE] = str(click.pk)
    other.refresh_from_db()
    click.refresh_from_db()
    assert other.lander_clicked_at is not None and click.lander_clicked_at is None
    assert Delivery.objects.count() == 1  # the click postback; /lp/click plans nothing


def test_lp_click_falls_back_to_the_cookie_when_the_parameter_is_no_click_id(client, campaign):
    click = factories.click(campaign)
    client.cookies[COOKIE] = str(click.pk)
    response = client.get("/lp/click", {"click_id": "{click_id}"})  # a macro left unfilled
    assert response["Location"] == f"https://offer.example/?s2={click.pk}"


def test_lp_click_renders_the_offer_url_for_the_click(client, campaign):
    offer = campaign.campaign_offers.get().offer
    offer.url = "https://offer.example/?s2={click_id}&src={externalid}&site={var:site}"
    offer.save()
    click = factories.click(campaign, external_id="a b", var1="news")
    response = client.get("/lp/click", {"click_id": str(click.pk)})
    assert response["Location"] == f"https://offer.example/?s2={click.pk}&src=a%20b&site=news"


@pytest.mark.parametrize(
    ("params", "cookie", "status", "code"),
    [
        ({}, None, 400, "missing_click_id"),
        ({"click_id": "not-a-uuid"}, None, 400, "invalid_click_id"),
        ({}, "garbage", 400, "invalid_click_id"),
        ({"click_id": str(uuid.uuid4())}, None, 404, "unknown_click_id"),
    ],
)
def test_lp_click_errors(client, campaign, params, cookie, status, code):
    if cookie:
        client.cookies[COOKIE] = cookie
    response = client.get("/lp/click", params)
    assert (response.status_code, response.json()["error"]) == (status, code)
    assert response.json()["detail"]
    # With the campaign named, its visitors go to its fallback URL instead.
    campaign.fallback_url = FALLBACK
    campaign.save()
    named = client.get("/lp/click", {**params, "campaign": campaign.key})
    assert (named.status_code, named["Location"]) == (302, FALLBACK)


def test_lp_click_without_an_active_offer_uses_the_click_campaigns_fallback(client, campaign):
    click = factories.click(campaign)
    Offer.objects.filter(pk=click.offer_id).update(is_active=False)
    campaign_cache.cache_clear()
    response = client.get("/lp/click", {"click_id": str(click.pk)})
    assert (response.status_code, response.json()["error"]) == (503, "no_offer")
    campaign.fallback_url = FALLBACK
    campaign.save()
    response = client.get("/lp/click", {"click_id": str(click.pk)})
    assert (response.status_code, response["Location"]) == (302, FALLBACK)


def test_lp_click_head_updates_nothing(client, campaign):
    click = factories.click(campaign)
    response = client.head("/lp/click", {"click_id": str(click.pk)})
    assert (response.status_code, response["Location"]) == (
        302,
        f"https://offer.example/?s2={click.pk}",
    )
    assert COOKIE not in response.cookies
    click.refresh_from_db()
    assert click.lander_clicked_at is None


def test_lp_click_statements(client, campaign, django_assert_num_queries):
    click = factories.click(campaign)
    # The click; its campaign, offer, traffic source and parameters (per-process cache); UPDATE.
    with django_assert_num_queries(6):
        client.get("/lp/click", {"click_id": str(click.pk)})
    with django_assert_num_queries(1):  # caches warm, already clicked: one SELECT
        client.get("/lp/click", {"click_id": str(click.pk)})


def test_inactive_lander_is_skipped(client, lander_campaign, lander):
    lander.is_active = False
    lander.save()
    response = client.get(f"/c/{lander_campaign.key}")
    click = Click.objects.get()
    assert response["Location"] == f"https://offer.example/?s2={click.pk}"
    assert click.lander is None


@pytest.mark.django_db(transaction=True)
def test_a_lander_click_is_still_one_insert():
    campaign = factories.campaign()
    campaign.lander = Lander.objects.create(name="L", url=LANDER_URL)
    campaign.save()
    client = Client()
    client.get(f"/c/{campaign.key}", {"external_id": "warm-up"})
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/c/{campaign.key}", {"external_id": "x"})
    assert response["Location"].startswith("https://lander.example/")
    assert [q["sql"].split(" ", 1)[0] for q in captured.captured_queries] == ["INSERT"]


# --- the click-ID cookie ------------------------------------------------------------------


def test_cookie_is_samesite_none_and_secure_over_https(client, campaign):
    response = client.get(f"/c/{campaign.key}", secure=True)
    cookie = response.cookies[COOKIE]
    assert (cookie["samesite"], cookie["secure"]) == ("None", True)
    assert cookie["max-age"] == settings.CLICK_COOKIE_MAX_AGE


def test_cookie_is_lax_over_plain_http(client, campaign):
    cookie = client.get(f"/c/{campaign.key}").cookies[COOKIE]
    assert (cookie["samesite"], cookie["secure"]) == ("Lax", "")


# --- the external-ID limit ------------------------------------------------------------------


def test_external_id_of_the_maximum_length_is_stored_whole(client, campaign):
    external_id = "e" * EXTERNAL_ID_MAX
    assert client.get(f"/c/{campaign.key}", {"external_id": external_id}).status_code == 302
    assert client.get(f"/i/{campaign.key}", {"external_id": external_id}).status_code == 200
    assert Click.objects.get().external_id == external_id
    assert Impression.objects.get().external_id == external_id


def test_longer_external_id_is_refused_and_nothing_is_written(client, campaign):
    factories.rule("https://ts.example/?c={externalid}", event_type=EventType.CLICK)
    factories.rule("https://ts.example/?i={externalid}", event_type=EventType.IMPRESSION)
    too_long = "é" * (EXTERNAL_ID_MAX + 1)  # characters, not bytes
    for path in (f"/c/{campaign.key}", f"/i/{campaign.key}"):
        response = client.get(path, {"external_id": too_long})
        assert (response.status_code, response.json()["error"]) == (400, "external_id_too_long")
        assert "1025 characters" in response.json()["detail"]
        assert COOKIE not in response.cookies
    assert not Click.objects.exists() and not Impression.objects.exists()
    assert not Delivery.objects.exists()


def test_custom_variables_are_cut_at_255(client, campaign):
    client.get(f"/c/{campaign.key}", {"site": "s" * 300})
    assert Click.objects.get().var1 == "s" * 255


# --- over real HTTP -----------------------------------------------------------------------


def test_campaign_flow_over_http(live_server):
    campaign = factories.campaign()
    campaign.lander = Lander.objects.create(name="L", url=LANDER_URL)
    campaign.save()
    base = live_server.url
    session = requests.Session()
    head = session.head(f"{base}/c/{campaign.key}", allow_redirects=False, timeout=10)
    assert head.status_code == 302 and head.headers["Location"].startswith("https://lander.")
    assert head.content == b"" and not Click.objects.exists()
    landed = session.get(
        f"{base}/c/{campaign.key}", params={"external_id": "h-1"}, allow_redirects=False, timeout=10
    )
    click = Click.objects.get()
    assert landed.headers["Location"] == f"https://lander.example/pre?cid={click.pk}&ext=h-1"
    assert "SameSite=Lax" in landed.headers["Set-Cookie"]
    onward = session.get(f"{base}/lp/click", allow_redirects=False, timeout=10)  # cookie only
    assert onward.headers["Location"] == f"https://offer.example/?s2={click.pk}"
    assert Click.objects.get().lander_clicked_at is not None
    too_long = session.get(
        f"{base}/c/{campaign.key}",
        params={"external_id": "x" * (EXTERNAL_ID_MAX + 1)},
        allow_redirects=False,
        timeout=10,
    )
    assert (too_long.status_code, too_long.json()["error"]) == (400, "external_id_too_long")
    campaign.is_active = False
    campaign.fallback_url = FALLBACK
    campaign.save()
    paused = session.get(f"{base}/c/{campaign.key}", allow_redirects=False, timeout=10)
    assert (paused.status_code, paused.headers["Location"]) == (302, FALLBACK)
    assert Click.objects.count() == 1
