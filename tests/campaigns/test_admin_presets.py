"""Admin: adding a traffic source from a preset, the preset shown on the source, and the
affiliate network's status and parameter mapping form."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from campaigns import presets
from campaigns.admin import AffiliateNetworkForm
from campaigns.models import AffiliateNetwork, TrafficSource
from postbacks.models import PostbackRule

pytestmark = pytest.mark.django_db

PRESET_URL = "/admin/campaigns/trafficsource/add-from-preset/"
CHANGELIST = "/admin/campaigns/trafficsource/"


def staff_client(*permissions: str) -> Client:
    user = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_changelist_links_to_the_preset_view(admin_client):
    page = admin_client.get(CHANGELIST).content.decode()
    assert f'href="{PRESET_URL}"' in page and "Add from preset" in page


def test_preset_view_lists_every_preset_with_docs_and_notes(admin_client):
    response = admin_client.get(PRESET_URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in page
    for preset in presets.PRESETS.values():
        assert f'type="radio" name="preset" id="id_preset_{preset.key}"' in page
        assert f'href="{preset.docs_url}"' in page
    assert "Taboola needs the name of the conversion event" in page
    assert "checked" not in page.split("<form", 1)[1].split('name="create_rule"')[0]


def test_preset_view_preselects_from_the_query(admin_client):
    page = admin_client.get(PRESET_URL, {"preset": "mgid"}).content.decode()
    assert re.search(r'id="id_preset_mgid" value="mgid" required checked', page)


def test_post_creates_source_and_rule_then_shows_them(admin_client):
    response = admin_client.post(PRESET_URL, {"preset": "taboola", "create_rule": "on"})
    source = TrafficSource.objects.get()
    rule = PostbackRule.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/campaigns/trafficsource/{source.pk}/change/"
    assert source.preset == "taboola" and list(rule.traffic_sources.all()) == [source]
    page = admin_client.get(response["Location"]).content.decode()
    rule_link = f'<a href="/admin/postbacks/postbackrule/{rule.pk}/change/">Taboola postback</a>'
    assert rule_link in page  # in the message and in the preset box
    assert "<strong>inactive</strong>: replace REPLACE_WITH_EVENT_NAME" in page
    assert 'href="https://developers.taboola.com/pixel/docs/the-postback-url"' in page


def test_post_with_a_name_and_without_rule(admin_client):
    presets.source_from_preset("richads")
    response = admin_client.post(PRESET_URL, {"preset": "richads", "name": "RichAds (RichPush)"})
    assert response.status_code == 302
    assert TrafficSource.objects.filter(name="RichAds (RichPush) (2)").exists()
    assert PostbackRule.objects.count() == 1  # the first one's only
    page = admin_client.get(response["Location"]).content.decode()
    assert "No postback rule was created, as asked." in page


def test_post_without_or_with_unknown_preset_shows_the_form_again(admin_client):
    for data in ({}, {"preset": "nope"}):
        response = admin_client.post(PRESET_URL, data)
        assert response.status_code == 200
        assert "Please correct the errors below." in response.content.decode()
    assert "Choose a preset." in admin_client.post(PRESET_URL, {}).content.decode()
    assert not TrafficSource.objects.exists()


def test_staff_without_add_permission_is_refused():
    client = staff_client("view_trafficsource")
    assert client.get(PRESET_URL).status_code == 403
    assert client.post(PRESET_URL, {"preset": "taboola"}).status_code == 403
    assert not TrafficSource.objects.exists()
    listing = client.get(CHANGELIST)
    assert listing.status_code == 200 and PRESET_URL not in listing.content.decode()


def test_anonymous_is_sent_to_login():
    response = Client().get(PRESET_URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_without_rule_permission_only_the_source_is_created():
    client = staff_client("add_trafficsource", "change_trafficsource", "view_trafficsource")
    assert 'name="create_rule"' not in client.get(PRESET_URL).content.decode()
    response = client.post(PRESET_URL, {"preset": "taboola", "create_rule": "on"})
    assert response.status_code == 302
    assert TrafficSource.objects.filter(preset="taboola").exists()
    assert not PostbackRule.objects.exists()
    page = client.get(response["Location"]).content.decode()
    assert "you may not add postback rules" in page


def test_the_form_is_csrf_protected(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(PRESET_URL, {"preset": "taboola"}).status_code == 403
    assert not TrafficSource.objects.exists()


def test_add_form_offers_the_preset_view_and_change_form_shows_the_preset(admin_client):
    add = admin_client.get("/admin/campaigns/trafficsource/add/").content.decode()
    assert f'href="{PRESET_URL}"' in add
    manual = TrafficSource.objects.create(name="Manual")
    page = admin_client.get(f"/admin/campaigns/trafficsource/{manual.pk}/change/")
    assert "None (set up by hand)." in page.content.decode()
    source, _ = presets.source_from_preset("facebook")
    page = admin_client.get(f"/admin/campaigns/trafficsource/{source.pk}/change/")
    text = page.content.decode()
    assert "Conversions API" in text and presets.get("facebook").docs_url in text
    assert 'name="preset"' not in text  # shown, not editable


def test_list_shows_preset_and_filter_offers_only_values_in_use(admin_client):
    presets.source_from_preset("taboola")
    TrafficSource.objects.create(name="Manual")
    page = admin_client.get(CHANGELIST).content.decode()
    assert 'href="?preset=taboola"' in page and 'href="?preset=_none"' in page
    assert "?preset=outbrain" not in page
    assert '<td class="field-preset_name">Taboola</td>' in page

    def listed(query: str) -> list[str]:
        page = admin_client.get(CHANGELIST, {"preset": query}).content.decode()
        return re.findall(r'<th class="field-name"><a href="[^"]+">([^<]+)</a>', page)

    assert listed("taboola") == ["Taboola"]
    assert listed("_none") == ["Manual"]


# --- Affiliate network: status and parameter mapping -----------------------------------


def network_data(**fields) -> dict[str, str]:
    data = {"name": "Affise", "notes": "", "postback_token": "", "allowed_ips": ""}
    data.update({"status_map": "", "param_map": ""}, **fields)
    return data


def test_network_maps_round_trip_through_the_admin(admin_client):
    status_text = "1 = Approved\n2 = pending\n\n# Affise's hold\n5 = pending\n3=REJECTED\n"
    param_text = "txid = transactionid\npayout = sum\n"
    response = admin_client.post(
        "/admin/campaigns/affiliatenetwork/add/",
        network_data(status_map=status_text, param_map=param_text),
    )
    assert response.status_code == 302
    network = AffiliateNetwork.objects.get()
    assert network.status_map == {
        "1": "approved", "2": "pending", "5": "pending", "3": "rejected",
    }  # fmt: skip
    assert network.param_map == {"txid": "transactionid", "payout": "sum"}
    assert network.status_for("3") == "rejected"
    page = admin_client.get(f"/admin/campaigns/affiliatenetwork/{network.pk}/change/")
    text = page.content.decode()
    for line in ("1 = approved", "5 = pending", "txid = transactionid", "payout = sum"):
        assert line in text
    assert "<code>1 = approved</code>" in text  # the help text's examples
    # Saving the form unchanged keeps both maps.
    form = AffiliateNetworkForm(
        instance=network,
        data=network_data(
            status_map=page.context["adminform"].form["status_map"].value(),
            param_map=page.context["adminform"].form["param_map"].value(),
        ),
    )
    assert form.is_valid(), form.errors
    assert "status_map" not in form.changed_data and "param_map" not in form.changed_data


def test_empty_maps_are_empty_objects():
    form = AffiliateNetworkForm(data=network_data(status_map="  \n", param_map=""))
    assert form.is_valid(), form.errors
    network = form.save()
    assert network.status_map == {} and network.param_map == {}


def test_status_map_value_may_hold_equals_signs():
    form = AffiliateNetworkForm(data=network_data(status_map="state=ok = approved"))
    assert form.is_valid(), form.errors
    assert form.cleaned_data["status_map"] == {"state=ok": "approved"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 = approved\n1 = rejected", "Line 2: “1” is already on line 1."),
        ("ok = approved\nOK = pending", "Line 2: “OK” is already on line 1."),
        ("1 = accepted", "Line 1: “accepted” is not one of our statuses"),
        ("1 = declined", "(did you mean rejected?)"),
        ("approved", "Line 1: write their value = our status"),
        ("= approved", "Line 1: write their value = our status"),
        ("x" * 65 + " = approved", "longer than 64 characters"),
    ],
)
def test_status_map_errors(text, message):
    form = AffiliateNetworkForm(data=network_data(status_map=text))
    assert not form.is_valid()
    assert any(message in error for error in form.errors["status_map"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clickid = sub1", "Line 1: “clickid” is not one of our parameter names"),
        ("txid = tid\ntxid = transaction_id", "Line 2: “txid” is already on line 1."),
        ("txid = tid\npayout = tid", "Line 2: “tid” is already the network's name for txid."),
        ("payout = txid", "Line 1: “txid” is our own name for another value."),
        ("status = their state", "Line 1: “their state”: use 1-64 letters"),
        ("status", "Line 1: write our name = their name"),
    ],
)
def test_param_map_errors(text, message):
    form = AffiliateNetworkForm(data=network_data(param_map=text))
    assert not form.is_valid()
    assert any(message in error for error in form.errors["param_map"])


def test_every_bad_line_is_reported():
    form = AffiliateNetworkForm(data=network_data(status_map="1 = nope\n2 = approved\n3 = x"))
    assert not form.is_valid()
    assert [e[:7] for e in form.errors["status_map"]] == ["Line 1:", "Line 3:"]


def test_network_admin_keeps_its_token_action(admin_client):
    network = AffiliateNetwork.objects.create(name="Net", status_map={"1": "approved"})
    admin_client.post(
        "/admin/campaigns/affiliatenetwork/",
        {"action": "generate_token", "_selected_action": [network.pk]},
    )
    network.refresh_from_db()
    assert len(network.postback_token) == 32 and network.status_map == {"1": "approved"}
