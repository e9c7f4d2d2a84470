"""Affiliate network security settings: validation, checks and what the admin shows."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from campaigns.models import AffiliateNetwork, new_postback_token, parse_ip_allowlist

TOKEN = "tok-abcdefghijklmnopqrstuvwxyz012345"


def test_allowlist_parses_ips_and_cidrs():
    networks = parse_ip_allowlist("203.0.113.7, 198.51.100.1/24\n2001:db8::/32")
    assert [str(n) for n in networks] == ["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/32"]
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        parse_ip_allowlist("10.0.0.1 10.0.0.300")


@pytest.mark.parametrize(
    ("allowed", "ip", "expected"),
    [("", None, True), ("", "1.2.3.4", True), ("1.2.3.4", "1.2.3.4", True),
     ("1.2.3.0/24", "1.2.3.99", True), ("1.2.3.4", "1.2.3.5", False), ("1.2.3.4", None, False),
     ("1.2.3.4", "garbage", False), ("::1", "::1", True), ("10.0.0.0/8", "::1", False)],
)  # fmt: skip
def test_ip_allowed(allowed, ip, expected):
    assert AffiliateNetwork(allowed_ips=allowed).ip_allowed(ip) is expected


def test_token_matches():
    assert AffiliateNetwork(postback_token="").token_matches("anything")
    network = AffiliateNetwork(postback_token=TOKEN)
    assert network.token_matches(TOKEN)
    assert not network.token_matches("")
    assert not network.token_matches(TOKEN + "x")
    assert not network.token_matches("é\udc80")  # non-ASCII and surrogates do not raise
    assert len(new_postback_token()) == 32


@pytest.mark.django_db
def test_bad_allowlist_is_refused_by_model_validation():
    with pytest.raises(ValidationError) as raised:
        AffiliateNetwork(name="N", allowed_ips="10.0.0.0/33").full_clean()
    assert "allowed_ips" in raised.value.message_dict


@pytest.mark.django_db
def test_admin_never_lists_the_token_and_can_generate_one(admin_client):
    network = AffiliateNetwork.objects.create(name="Net", postback_token=TOKEN)
    listing = admin_client.get("/admin/campaigns/affiliatenetwork/")
    assert listing.status_code == 200 and TOKEN not in listing.content.decode()
    form = admin_client.get(f"/admin/campaigns/affiliatenetwork/{network.pk}/change/")
    assert b"X-Postback-Token" in form.content and b"allowed_ips" in form.content
    admin_client.post(
        "/admin/campaigns/affiliatenetwork/",
        {"action": "generate_token", "_selected_action": [network.pk]},
    )
    network.refresh_from_db()
    assert network.postback_token != TOKEN and len(network.postback_token) == 32


def test_tracking_url_keeps_bracket_macros_and_leaves_out_empty_placeholders(db):
    from campaigns.models import TrafficSourceParameter
    from tests import factories

    source = factories.traffic_source(
        "RichAds-like", external_id_param="click_id", external_id_placeholder="[CLICK_ID]"
    )
    TrafficSourceParameter.objects.create(
        traffic_source=source, slot=2, name="fbclid", param="fbclid", placeholder=""
    )
    url = factories.campaign(source).tracking_url("https://t.example")
    assert url.endswith("?click_id=[CLICK_ID]&site={site}")
