"""/api/v1/ resources of the campaigns app: traffic sources (with parameters), affiliate
networks, offers, landers, campaigns (with weighted offers) and traffic-source presets."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from campaigns import presets
from campaigns.models import AffiliateNetwork, Campaign, Lander, Offer, TrafficSource
from postbacks.models import PostbackRule
from tests import factories

pytestmark = pytest.mark.django_db

OFFER_URL = "https://offer.example/?s2={cf_click_id}"


def _errors(answer) -> dict:
    assert answer.status_code == 400, answer.content
    body = answer.json()
    assert body["error"] == "invalid"
    return body["detail"]


# --- CRUD -------------------------------------------------------------------------------


def test_traffic_source_crud_with_parameters(api):
    answer = api.post(
        "/api/v1/traffic-sources/",
        {
            "name": "Outbrain",
            "external_id_param": "ob_click_id",
            "external_id_placeholder": "{{ob_click_id}}",
            "parameters": [
                {"slot": 1, "name": "site", "param": "site", "placeholder": "{{site}}"},
                {"slot": 2, "name": "ad", "param": "ad", "placeholder": "{{ad_id}}"},
            ],
        },
        format="json",
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["preset"] == ""
    assert [p["slot"] for p in body["parameters"]] == [1, 2]
    assert body["parameters"][0]["is_enabled"] is True
    url = f"/api/v1/traffic-sources/{body['id']}/"

    listed = api.get("/api/v1/traffic-sources/", {"name": "Outbrain"}).json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == body["id"]

    # Nested write replaces the list.
    answer = api.patch(
        url,
        {"parameters": [{"slot": 5, "name": "pub", "param": "pub", "placeholder": ""}]},
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert [p["slot"] for p in answer.json()["parameters"]] == [5]
    source = TrafficSource.objects.get(pk=body["id"])
    assert list(source.parameters.values_list("param", flat=True)) == ["pub"]

    # PATCH without the list leaves it alone.
    answer = api.patch(url, {"external_id_placeholder": "{click}"}, format="json")
    assert answer.status_code == 200
    assert [p["param"] for p in answer.json()["parameters"]] == ["pub"]

    # An empty list clears it.
    assert api.patch(url, {"parameters": []}, format="json").json()["parameters"] == []

    assert api.delete(url).status_code == 204
    assert not TrafficSource.objects.filter(pk=body["id"]).exists()


def test_traffic_source_parameters_are_validated(api):
    answer = api.post(
        "/api/v1/traffic-sources/",
        {
            "name": "X",
            "parameters": [
                {"slot": 1, "name": "a", "param": "a"},
                {"slot": 1, "name": "b", "param": "b"},
            ],
        },
        format="json",
    )
    assert "var1" in str(_errors(answer)["parameters"])
    answer = api.post(
        "/api/v1/traffic-sources/",
        {"name": "X", "parameters": [{"slot": 11, "name": "a b", "param": "a"}]},
        format="json",
    )
    row = _errors(answer)["parameters"]["0"]
    assert set(row) == {"slot", "name"}
    answer = api.post("/api/v1/traffic-sources/", {"name": "X", "external_id_param": "var3"})
    assert "external_id_param" in _errors(answer)
    assert not TrafficSource.objects.exists()


def test_a_protected_traffic_source_answers_409(api):
    camp = factories.campaign()
    answer = api.delete(f"/api/v1/traffic-sources/{camp.traffic_source_id}/")
    assert answer.status_code == 409
    assert answer.json()["error"] == "protected"


def test_affiliate_network_crud_and_the_token_is_never_returned(api):
    secret = "s3cr3t-token-value-0123456789abc"
    answer = api.post(
        "/api/v1/affiliate-networks/",
        {
            "name": "Net",
            "postback_token": secret,
            "allowed_ips": "203.0.113.7, 198.51.100.0/24",
            "status_map": {"1": "Approved", "0": "rejected"},
            "param_map": {"txid": "transaction_id"},
        },
        format="json",
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert secret not in answer.content.decode()
    assert "postback_token" not in body
    assert body["has_postback_token"] is True
    assert body["status_map"] == {"1": "approved", "0": "rejected"}
    network = AffiliateNetwork.objects.get(pk=body["id"])
    assert network.postback_token == secret
    assert body["key"] == network.key and len(network.key) == 10
    assert body["postback_url"] == network.postback_url(show_token=False)
    assert "token=***" in body["postback_url"]

    url = f"/api/v1/affiliate-networks/{network.pk}/"
    for answer in (api.get(url), api.get("/api/v1/affiliate-networks/")):
        assert answer.status_code == 200 and secret not in answer.content.decode()

    answer = api.patch(url, {"postback_token": "", "notes": "hi"}, format="json")
    assert answer.status_code == 200
    assert answer.json()["has_postback_token"] is False
    assert "token=" not in answer.json()["postback_url"]

    # A blank key keeps the current one.
    assert api.patch(url, {"key": ""}, format="json").json()["key"] == network.key

    assert api.delete(url).status_code == 204
    assert not AffiliateNetwork.objects.exists()


def test_a_network_preset_fills_an_empty_status_map(api):
    answer = api.post("/api/v1/affiliate-networks/", {"name": "A", "preset": "affise"})
    assert answer.status_code == 201, answer.content
    assert answer.json()["status_map"] == {
        "1": "approved",
        "2": "pending",
        "3": "rejected",
        "5": "pending",
    }
    answer = api.post("/api/v1/affiliate-networks/", {"name": "B", "preset": "nope"})
    assert "preset" in _errors(answer)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("param_map", {"bogus": "x"}, "not one of our parameter names"),
        ("param_map", {"txid": "bad name"}, "use 1-64 letters"),
        ("param_map", {"txid": "tid", "payout": "tid"}, "already the network's name"),
        ("param_map", {"txid": "payout"}, "our own name"),
        ("param_map", ["txid"], "dictionary"),
        ("status_map", {"1": "chargeback"}, "did you mean refunded"),
        ("status_map", {"A": "approved", "a": "rejected"}, "same key"),
        ("status_map", {"x" * 65: "approved"}, "longer than 64"),
        ("allowed_ips", "10.0.0.300", "not an IP address"),
    ],
)
def test_network_mappings_are_validated_like_the_admin(api, field, value, says):
    answer = api.post("/api/v1/affiliate-networks/", {"name": "Net", field: value}, format="json")
    errors = _errors(answer)
    assert set(errors) == {field}
    assert says in str(errors[field])


def test_offer_crud_and_validation(api):
    network = AffiliateNetwork.objects.create(name="Net")
    answer = api.post(
        "/api/v1/offers/",
        {"name": "O", "affiliate_network": network.pk, "url": OFFER_URL, "payout": "2.5"},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["currency"] == "USD" and body["payout_mode"] == "auto"
    assert body["payout"] == "2.500000"
    url = f"/api/v1/offers/{body['id']}/"
    answer = api.put(
        url,
        {
            "name": "O2",
            "affiliate_network": None,
            "url": OFFER_URL,
            "currency": "EUR",
            "payout_mode": "manual",
        },
        format="json",
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["affiliate_network"] is None
    assert Offer.objects.get().currency == "EUR"
    assert api.get("/api/v1/offers/", {"currency": "EUR"}).json()["count"] == 1
    assert api.get("/api/v1/offers/", {"currency": "USD"}).json()["count"] == 0

    for bad, field in (
        ({"url": "ftp://offer.example/{click_id}"}, "url"),
        ({"url": "https://offer.example/"}, "url"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"payout_mode": "sometimes"}, "payout_mode"),
    ):
        assert field in _errors(api.patch(url, bad, format="json")), bad
    assert api.delete(url).status_code == 204


def test_lander_crud_and_url_validation(api):
    answer = api.post(
        "/api/v1/landers/", {"name": "L", "url": " https://lp.example/?cid={click_id} "}
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["url"] == "https://lp.example/?cid={click_id}"
    url = f"/api/v1/landers/{body['id']}/"
    assert api.patch(url, {"is_active": False}).json()["is_active"] is False
    assert "url" in _errors(api.patch(url, {"url": "https://lp.example/?cid={nope}&c={click_id}"}))
    assert "url" in _errors(api.patch(url, {"url": "https://lp.example/"}))
    assert "url" in _errors(api.patch(url, {"url": "not a url {click_id}"}))
    assert api.delete(url).status_code == 204
    assert not Lander.objects.exists()


def test_campaign_crud_with_weighted_offers(api):
    source = factories.traffic_source()
    first, second, third = (factories.offer(name) for name in ("A", "B", "C"))
    answer = api.post(
        "/api/v1/campaigns/",
        {
            "name": "Camp",
            "traffic_source": source.pk,
            "fallback_url": "example.com/paused",
            "offers": [{"offer": first.pk, "weight": 70}, {"offer": second.pk}],
        },
        format="json",
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    camp = Campaign.objects.get(pk=body["id"])
    assert body["key"] == camp.key
    assert body["fallback_url"] == "https://example.com/paused"
    assert body["tracking_url"] == camp.tracking_url()
    assert body["tracking_url"].endswith(f"/c/{camp.key}?external_id={{click_id}}&site={{site}}")
    assert body["offers"] == [
        {"offer": first.pk, "weight": 70},
        {"offer": second.pk, "weight": 100},
    ]
    url = f"/api/v1/campaigns/{camp.pk}/"

    answer = api.patch(url, {"offers": [{"offer": third.pk, "weight": 5}]}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["offers"] == [{"offer": third.pk, "weight": 5}]
    assert list(camp.campaign_offers.values_list("offer_id", "weight")) == [(third.pk, 5)]

    answer = api.patch(url, {"is_active": False}, format="json")
    assert answer.json()["is_active"] is False
    assert answer.json()["offers"] == [{"offer": third.pk, "weight": 5}]
    assert api.get("/api/v1/campaigns/", {"is_active": "false"}).json()["count"] == 1

    # An offer in a campaign cannot be deleted.
    assert api.delete(f"/api/v1/offers/{third.pk}/").status_code == 409

    assert api.delete(url).status_code == 204
    assert not Campaign.objects.exists()


def test_campaign_validation(api):
    camp = factories.campaign()
    offer = camp.campaign_offers.get().offer
    url = f"/api/v1/campaigns/{camp.pk}/"
    errors = _errors(
        api.patch(url, {"offers": [{"offer": offer.pk}, {"offer": offer.pk}]}, format="json")
    )
    assert "more than once" in str(errors["offers"])
    errors = _errors(api.patch(url, {"offers": [{"offer": offer.pk, "weight": 0}]}, format="json"))
    assert "weight" in errors["offers"]["0"]
    assert (
        "offer"
        in _errors(api.patch(url, {"offers": [{"offer": 999999}]}, format="json"))["offers"]["0"]
    )
    assert "fallback_url" in _errors(api.patch(url, {"fallback_url": "not a url"}))
    assert "traffic_source" in _errors(api.patch(url, {"traffic_source": 999999}))
    assert "key" in _errors(api.patch(url, {"key": "no spaces"}))
    # Nothing changed.
    assert list(camp.campaign_offers.values_list("offer_id", "weight")) == [(offer.pk, 100)]


# --- strictness, permissions, presets ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/api/v1/traffic-sources/", {"name": "X"}),
        ("/api/v1/affiliate-networks/", {"name": "X"}),
        ("/api/v1/offers/", {"name": "X", "url": OFFER_URL}),
        ("/api/v1/landers/", {"name": "X", "url": "https://lp.example/?c={click_id}"}),
    ],
)
def test_an_unknown_field_is_refused_by_name(api, path, data):
    errors = _errors(api.post(path, {**data, "colour": "red"}, format="json"))
    assert errors == {"colour": ["Unknown field."]}


def test_an_unknown_field_in_a_nested_row_is_refused(api):
    answer = api.post(
        "/api/v1/traffic-sources/",
        {"name": "X", "parameters": [{"slot": 1, "name": "a", "param": "a", "oops": 1}]},
        format="json",
    )
    assert _errors(answer)["parameters"]["0"] == {"oops": ["Unknown field."]}


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("trafficsource", "traffic-sources"),
        ("affiliatenetwork", "affiliate-networks"),
        ("offer", "offers"),
        ("lander", "landers"),
        ("campaign", "campaigns"),
    ],
)
def test_view_permission_reads_only(api_for, model, path):
    camp = factories.campaign()
    Lander.objects.create(name="L", url="https://lp.example/?c={click_id}")
    pk = {
        "trafficsource": camp.traffic_source_id,
        "affiliatenetwork": AffiliateNetwork.objects.get().pk,
        "offer": Offer.objects.first().pk,
        "lander": Lander.objects.get().pk,
        "campaign": camp.pk,
    }[model]
    client = api_for(f"view_{model}")
    assert client.get(f"/api/v1/{path}/").status_code == 200
    assert client.get(f"/api/v1/{path}/{pk}/").status_code == 200
    for answer in (
        client.post(f"/api/v1/{path}/", {"name": "new"}, format="json"),
        client.patch(f"/api/v1/{path}/{pk}/", {"name": "new"}, format="json"),
        client.delete(f"/api/v1/{path}/{pk}/"),
    ):
        assert answer.status_code == 403
        assert answer.json()["error"] == "permission_denied"
    assert api_for().get(f"/api/v1/{path}/").status_code == 403
    assert APIClient().get(f"/api/v1/{path}/").status_code == 401


def test_traffic_source_presets_for_any_authenticated_user(api_for):
    answer = api_for().get("/api/v1/traffic-source-presets/")
    assert answer.status_code == 200
    items = answer.json()
    assert [item["key"] for item in items] == [key for key, _ in presets.choices()]
    taboola = next(item for item in items if item["key"] == "taboola")
    assert taboola["external_id_placeholder"] == presets.PRESETS["taboola"].external_id_placeholder
    assert {"slot", "name", "param", "placeholder"} <= set(taboola["parameters"][0])
    assert APIClient().get("/api/v1/traffic-source-presets/").status_code == 401
    assert api_for().post("/api/v1/traffic-source-presets/", {}).status_code == 405


def test_the_schema_describes_the_resources(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in ("traffic-sources", "affiliate-networks", "offers", "landers", "campaigns"):
        assert f"/api/v1/{path}/{{id}}/" in schema["paths"]
    network = schema["components"]["schemas"]["AffiliateNetwork"]["properties"]
    assert "postback_token" not in network and network["has_postback_token"]["readOnly"]
    assert schema["components"]["schemas"]["AffiliateNetworkRequest"]["properties"][
        "postback_token"
    ]["writeOnly"]


# --- Traffic source from a preset ------------------------------------------------------

FROM_PRESET = "/api/v1/traffic-sources/from-preset/"


def test_traffic_source_from_a_preset(api):
    preset = presets.PRESETS["taboola"]
    answer = api.post(FROM_PRESET, {"preset": "taboola"}, format="json")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    source = TrafficSource.objects.get()
    assert body == api.get(f"/api/v1/traffic-sources/{source.pk}/").json()
    assert (body["name"], body["preset"]) == (preset.name, "taboola")
    assert body["external_id_param"] == preset.external_id_param
    assert body["external_id_placeholder"] == preset.external_id_placeholder
    assert [(p["slot"], p["param"], p["placeholder"]) for p in body["parameters"]] == [
        (p.slot, p.param, p.placeholder) for p in preset.parameters
    ]
    assert not PostbackRule.objects.exists()
    # No name: the preset's, made unique as the admin does.
    again = api.post(FROM_PRESET, {"preset": "taboola", "name": " "}, format="json")
    assert again.status_code == 201 and again.json()["name"] == f"{preset.name} (2)"
    named = api.post(FROM_PRESET, {"preset": "outbrain", "name": " OB main "}, format="json")
    assert named.status_code == 201 and named.json()["name"] == "OB main"
    assert named.json()["preset"] == "outbrain"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"preset": "nope"}, "preset"),
        ({}, "preset"),
        ({"preset": "taboola", "name": "Taken"}, "name"),
        ({"preset": "taboola", "name": "x" * 101}, "name"),
        ({"preset": "taboola", "colour": "red"}, "colour"),
    ],
)
def test_traffic_source_from_a_preset_refusals(api, data, field):
    factories.traffic_source("Taken")
    detail = _errors(api.post(FROM_PRESET, data, format="json"))
    assert list(detail) == [field], detail
    assert list(TrafficSource.objects.values_list("name", flat=True)) == ["Taken"]


def test_traffic_source_from_a_preset_needs_the_add_permission(api_for):
    viewer = api_for("view_trafficsource")
    answer = viewer.post(FROM_PRESET, {"preset": "taboola"}, format="json")
    assert answer.status_code == 403 and answer.json()["error"] == "permission_denied"
    assert APIClient().post(FROM_PRESET, {"preset": "taboola"}, format="json").status_code == 401
    adder = api_for("add_trafficsource")
    assert adder.post(FROM_PRESET, {"preset": "taboola"}, format="json").status_code == 201
    assert TrafficSource.objects.count() == 1


# --- Affiliate network security token ---------------------------------------------------


def test_network_token_is_generated_shown_once_and_cleared(api):
    network = factories.offer().affiliate_network
    url = f"/api/v1/affiliate-networks/{network.pk}/token/"
    answer = api.post(url)
    assert answer.status_code == 200, answer.content
    assert answer["Cache-Control"] == "no-store"
    body = answer.json()
    token = body["postback_token"]
    assert len(token) == 32 and token.isalnum()
    network.refresh_from_db()
    assert network.postback_token == token
    assert body["postback_url"] == network.postback_url()
    assert body["postback_url"].endswith(f"&token={token}")
    shown = api.get(f"/api/v1/affiliate-networks/{network.pk}/")
    assert token not in shown.content.decode() and shown.json()["has_postback_token"]
    # A new token replaces the old one.
    second = api.post(url).json()["postback_token"]
    network.refresh_from_db()
    assert second != token and network.token_matches(second)
    assert not network.token_matches(token)
    cleared = api.delete(url)
    assert cleared.status_code == 204 and not cleared.content
    network.refresh_from_db()
    assert network.postback_token == "" and network.token_matches("")
    assert (
        api.get(f"/api/v1/affiliate-networks/{network.pk}/").json()["has_postback_token"] is False
    )
    assert api.post("/api/v1/affiliate-networks/999999/token/").status_code == 404


def test_network_token_needs_the_change_permission(api_for):
    network = AffiliateNetwork.objects.create(name="Net", postback_token="old")
    url = f"/api/v1/affiliate-networks/{network.pk}/token/"
    for perms in (("view_affiliatenetwork",), ("add_affiliatenetwork", "delete_affiliatenetwork")):
        client = api_for(*perms)
        for answer in (client.post(url), client.delete(url)):
            assert answer.status_code == 403, perms
            assert answer.json()["error"] == "permission_denied"
    assert APIClient().post(url).status_code == 401
    network.refresh_from_db()
    assert network.postback_token == "old"
    changer = api_for("change_affiliatenetwork")
    assert changer.post(url).status_code == 200
    network.refresh_from_db()
    assert network.postback_token != "old"
    assert changer.delete(url).status_code == 204
