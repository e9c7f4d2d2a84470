"""Affiliate-network presets and the network's postback URL (model and admin), the lander
admin and the campaign admin's lander, fallback and paused state."""

from __future__ import annotations

import re

import pytest

from campaigns import network_presets
from campaigns.admin import AffiliateNetworkForm, LanderForm
from campaigns.models import STATUS_VALUES, AffiliateNetwork, Campaign, Lander
from tests import factories
from tracker.models import Click, Conversion

pytestmark = pytest.mark.django_db
BASE = "https://trk.example"
NETWORKS = "/admin/campaigns/affiliatenetwork/"


@pytest.fixture(autouse=True)
def _base_url(settings):
    settings.TRACKER_BASE_URL = BASE


def network_data(**fields) -> dict[str, str]:
    data = {"name": "Net", "key": "", "preset": "", "notes": "", "response_body": ""}
    data.update({"postback_token": "", "allowed_ips": "", "status_map": "", "param_map": ""})
    data.update(fields)
    return data


# --- presets ------------------------------------------------------------------------------


def test_presets_load_with_evidence_docs_and_only_our_parameters():
    presets = network_presets.PRESETS
    assert {"cake", "tune", "everflow", "affise", "impact", "awin", "trackier"} <= set(presets)
    # Networks whose macros the reference marks unconfirmed are left out.
    assert not {"clickbank", "maxbounty", "cj", "offer18"} & set(presets)
    for preset in presets.values():
        assert preset.docs_url.startswith("https://")
        assert preset.evidence in network_presets.EVIDENCE_LABELS
        assert preset.notes
        for macro in preset.macros:
            assert macro.param in network_presets.POSTBACK_PARAMS
            assert macro.evidence in (network_presets.OFFICIAL, network_presets.THIRD_PARTY)
            assert macro.macro and "REPLACE_WITH_" not in macro.macro
        for theirs, ours in preset.status_map.items():
            assert ours in STATUS_VALUES and theirs
    assert [key for key, _ in network_presets.choices()] == sorted(
        presets, key=lambda key: presets[key].name.lower()
    )


def test_preset_details_follow_the_reference():
    cake, affise = network_presets.get("cake"), network_presets.get("affise")
    assert [(m.param, m.macro) for m in cake.macros] == [
        ("click_id", "#s2#"),
        ("payout", "#price#"),
        ("txid", "#leadid#"),
    ]
    assert (cake.offer_param, cake.evidence) == ("s2", network_presets.OFFICIAL)
    assert dict(affise.status_map) == {
        "1": "approved",
        "2": "pending",
        "3": "rejected",
        "5": "pending",
    }
    assert network_presets.get("tune").evidence == network_presets.THIRD_PARTY
    # No confirmed click-ID macro: the preset says so instead of guessing one.
    assert network_presets.get("zeydoo").evidence == network_presets.UNCONFIRMED
    with pytest.raises(KeyError, match="nope"):
        network_presets.get("nope")


# --- the postback URL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "query"),
    [
        ("cake", "click_id=#s2#&payout=#price#&txid=#leadid#"),
        (
            "affise",
            "click_id={sub1}&payout={sum}&txid={transactionid}&status={status}&currency={currency}",
        ),
        ("awin", "click_id=!!!clickRef!!!&payout=!!!commission!!!"),
        ("linktrust", "click_id=[=SID=]&payout=[=AffiliateCommission=]&txid=[=_TransID=]"),
        ("zeydoo", "click_id=REPLACE_WITH_CLICK_ID_MACRO&payout={amount}"),
        (
            "",
            "click_id=REPLACE_WITH_CLICK_ID_MACRO&payout=REPLACE_WITH_PAYOUT_MACRO"
            "&txid=REPLACE_WITH_TRANSACTION_ID_MACRO&status=REPLACE_WITH_STATUS_MACRO"
            "&currency=REPLACE_WITH_CURRENCY_MACRO",
        ),
    ],
)
def test_postback_url_has_the_presets_macros_verbatim(preset, query):
    network = AffiliateNetwork(name="N", key="net-1", preset=preset)
    assert network.postback_url() == f"{BASE}/cv/net-1?{query}"


def test_postback_url_carries_the_token_or_masks_it():
    network = AffiliateNetwork(name="N", key="k", preset="cake", postback_token="a&b c")
    assert network.postback_url("http://x/").endswith("&txid=#leadid#&token=a%26b%20c")
    assert network.postback_url().startswith(f"{BASE}/cv/k?")
    assert network.postback_url(show_token=False).endswith("&token=***")


@pytest.mark.parametrize(
    ("preset", "filled", "expected_status"),
    [
        ("affise", {"{sub1}": "CLICK", "{sum}": "2.5", "{transactionid}": "T-9",
                    "{status}": "3", "{currency}": "EUR"}, "rejected"),
        ("cake", {"#s2#": "CLICK", "#price#": "2.5", "#leadid#": "T-9"}, "approved"),
    ],
)  # fmt: skip
def test_the_url_works_once_the_network_fills_its_macros(
    client, admin_client, preset, filled, expected_status
):
    admin_client.post(f"{NETWORKS}add/", network_data(name="Net", preset=preset))
    network = AffiliateNetwork.objects.get()
    click = factories.click(factories.campaign(None, factories.offer(affiliate_network=network)))
    url = network.postback_url()
    for macro, value in filled.items():
        url = url.replace(macro, str(click.pk) if value == "CLICK" else value)
    response = client.get(url.removeprefix(BASE))
    assert response.status_code == 200, response.content
    conversion = Conversion.objects.get()
    assert (conversion.click_id, conversion.txid, str(conversion.payout)) == (
        click.pk,
        "T-9",
        "2.500000",
    )
    assert conversion.status == expected_status


# --- the network admin --------------------------------------------------------------------


def test_change_page_shows_the_url_with_a_copy_button(admin_client):
    network = AffiliateNetwork.objects.create(name="Aff", key="aff-1", preset="affise")
    page = admin_client.get(f"{NETWORKS}{network.pk}/change/").content.decode()
    assert "Postback URL for this network" in page
    url = network.postback_url().replace("&", "&amp;")
    assert f'<code id="postback-url" class="postback-url">{url}</code>' in page
    assert 'data-copy="postback-url">Copy</button>' in page
    assert "navigator.clipboard" in page and "<script src=" not in page.split("footer")[-1]
    assert "help-center.affise.com" in page and "1 = approved" in page
    assert "Offer URL: put our click ID in <code>sub1</code>" in page
    assert "Affise (official)" in page  # the preset choice names its evidence


def test_list_shows_the_url_and_masks_a_token(admin_client):
    plain = AffiliateNetwork.objects.create(name="Plain", key="plain", preset="cake")
    secret = AffiliateNetwork.objects.create(
        name="Secret", key="secret", preset="cake", postback_token="tok-SECRET-123"
    )
    page = admin_client.get(NETWORKS).content.decode()
    assert plain.postback_url().replace("&", "&amp;") in page
    assert f'data-copy="postback-url-{plain.pk}"' in page
    assert f'data-copy="postback-url-{secret.pk}"' not in page
    assert secret.postback_url(show_token=False).replace("&", "&amp;") in page
    assert "tok-SECRET-123" not in page
    assert "navigator.clipboard" in page


def test_change_page_shows_the_token_in_the_url(admin_client):
    network = AffiliateNetwork.objects.create(name="S", key="s", postback_token="tok-1")
    page = admin_client.get(f"{NETWORKS}{network.pk}/change/").content.decode()
    assert "&amp;token=tok-1</code>" in page
    assert "Still to replace: REPLACE_WITH_CLICK_ID_MACRO" in page


def test_add_page_renders_and_generates_a_key(admin_client):
    assert admin_client.get(f"{NETWORKS}add/").status_code == 200
    response = admin_client.post(f"{NETWORKS}add/", network_data(name="NoKey"))
    assert response.status_code == 302
    network = AffiliateNetwork.objects.get()
    assert re.fullmatch(r"[a-z0-9]{10}", network.key)


def test_preset_fills_an_empty_status_mapping_only(admin_client):
    response = admin_client.post(
        f"{NETWORKS}add/",
        network_data(name="A", key="a", preset="affise", response_body="success=true;"),
        follow=True,
    )
    network = AffiliateNetwork.objects.get(key="a")
    assert network.status_map == {"1": "approved", "2": "pending", "3": "rejected", "5": "pending"}
    assert (network.preset, network.response_body) == ("affise", "success=true;")
    assert "Status mapping filled from the Affise preset" in response.content.decode()
    admin_client.post(
        f"{NETWORKS}add/",
        network_data(name="B", key="b", preset="affise", status_map="1 = pending"),
    )
    assert AffiliateNetwork.objects.get(key="b").status_map == {"1": "pending"}


def test_saving_unchanged_keeps_key_preset_and_flags(admin_client):
    network = AffiliateNetwork.objects.create(
        name="Keep", key="keep-me", preset="cake", accept_duplicates=True
    )
    form = AffiliateNetworkForm(
        instance=network,
        data=network_data(name="Keep", key="keep-me", preset="cake", accept_duplicates="on"),
    )
    assert form.is_valid(), form.errors
    saved = form.save()
    assert (saved.key, saved.preset, saved.accept_duplicates) == ("keep-me", "cake", True)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"key": "bad key!"}, "key", "letters, numbers, underscores or hyphens"),
        ({"key": "taken"}, "key", "already exists"),
        ({"preset": "nope"}, "preset", "Select a valid choice"),
        ({"response_body": "x" * 501}, "response_body", "at most 500 characters"),
        ({"param_map": "clickid = sub1"}, "param_map", "not one of our parameter names"),
    ],
)
def test_network_form_errors(fields, field, message):
    AffiliateNetwork.objects.create(name="Other", key="taken")
    form = AffiliateNetworkForm(data=network_data(**fields))
    assert not form.is_valid()
    assert any(message in error for error in form.errors[field]), form.errors


def test_unknown_stored_preset_is_kept_and_named(admin_client):
    network = AffiliateNetwork.objects.create(name="Old", key="old", preset="retired")
    page = admin_client.get(f"{NETWORKS}{network.pk}/change/").content.decode()
    assert "retired (no longer a known preset)" in page
    assert "REPLACE_WITH_CLICK_ID_MACRO" in page


# --- landers and campaigns -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://lander.example/", "Add {click_id}"),
        ("ftp://lander.example/?c={click_id}", "Enter an http:// or https:// URL."),
        ("https://lander.example/?c={click_id}&x={clik_id}", "did you mean"),
        ("https://lander.example/?c={click_id}&t=a b", "Unencoded space"),
    ],
)
def test_lander_url_errors_are_clear(url, message):
    form = LanderForm(data={"name": "L", "url": url, "is_active": "on"})
    assert not form.is_valid()
    assert any(message in error for error in form.errors["url"]), form.errors


def test_lander_admin_pages(admin_client):
    lander = Lander.objects.create(name="Quiz", url="https://lp.example/?c={click_id}")
    campaign = factories.campaign()
    campaign.lander = lander
    campaign.save()
    for url in (
        "/admin/campaigns/lander/",
        "/admin/campaigns/lander/add/",
        "/admin/campaigns/lander/?is_active__exact=1",
        "/admin/campaigns/lander/?q=quiz",
        f"/admin/campaigns/lander/{lander.pk}/change/",
    ):
        assert admin_client.get(url).status_code == 200, url  # fmt: skip
    page = admin_client.get("/admin/campaigns/lander/add/").content.decode()
    assert f"{BASE}/lp/click" in page
    response = admin_client.post(
        "/admin/campaigns/lander/add/",
        {"name": "New", "url": "https://lp2.example/?cid={click_id}", "is_active": "on"},
    )
    assert response.status_code == 302 and Lander.objects.filter(name="New").exists()


def test_campaign_form_has_lander_and_fallback_and_the_list_shows_paused(admin_client):
    lander = Lander.objects.create(name="Quiz", url="https://lp.example/?c={click_id}")
    campaign = factories.campaign(name="Summer")
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert 'name="lander"' in page and 'name="fallback_url"' in page
    assert f"{BASE}/lp/click" in page and "Where visitors go while the campaign is paused" in page
    Campaign.objects.filter(pk=campaign.pk).update(
        is_active=False, lander=lander, fallback_url="https://home.example/"
    )
    factories.campaign(factories.traffic_source("Other"), name="Winter").campaign_offers.get()
    page = admin_client.get("/admin/campaigns/campaign/").content.decode()
    assert "Paused</strong>: visitors go to <code>https://home.example/</code>" in page
    assert "Active" in page


def test_campaign_pause_and_resume_actions(admin_client, client):
    campaign = factories.campaign()
    assert client.get(f"/c/{campaign.key}").status_code == 302
    admin_client.post(
        "/admin/campaigns/campaign/", {"action": "pause", "_selected_action": [campaign.pk]}
    )
    campaign.refresh_from_db()
    assert not campaign.is_active
    assert client.get(f"/c/{campaign.key}").status_code == 404  # the cache saw it
    admin_client.post(
        "/admin/campaigns/campaign/", {"action": "resume", "_selected_action": [campaign.pk]}
    )
    assert client.get(f"/c/{campaign.key}").status_code == 302
    assert Click.objects.count() == 2


def test_pausing_without_fallback_warns(admin_client):
    campaign = factories.campaign()
    data = {
        "name": campaign.name,
        "traffic_source": campaign.traffic_source_id,
        "key": campaign.key,
        "lander": "",
        "fallback_url": "",
        "campaign_offers-TOTAL_FORMS": "0",
        "campaign_offers-INITIAL_FORMS": "0",
    }
    response = admin_client.post(
        f"/admin/campaigns/campaign/{campaign.pk}/change/", data, follow=True
    )
    assert "paused without a fallback URL" in response.content.decode()
    assert not Campaign.objects.get().is_active
