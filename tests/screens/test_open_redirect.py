"""Offer and lander URLs must name their host: a macro there made ``/c/<key>`` an open
redirect (issue 17, defect 8)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from campaigns.models import Lander, Offer, validate_template_url

pytestmark = pytest.mark.django_db
MACRO_HOSTS = [
    "https://{var1}/land?s2={click_id}",
    "https://{site}.example/?s2={click_id}",
    "https://user@{var1}/?s2={click_id}",
    "https://good.example:{var2}/?s2={click_id}",
    "https://evil.example\\@good.example/?s2={click_id}",
]


@pytest.mark.parametrize("url", MACRO_HOSTS)
def test_a_macro_in_the_host_is_refused(url):
    with pytest.raises(ValidationError, match="host must be written out"):
        validate_template_url(url)


def test_macros_after_the_host_are_fine():
    validate_template_url("https://offer.example/{var1}/?s2={click_id}#{var2}")


@pytest.mark.parametrize("resource", ["offers", "landers"])
def test_the_api_refuses_an_offer_or_lander_with_a_macro_host(api, resource):
    body = {"name": "X", "url": MACRO_HOSTS[0]}
    answer = api.post(f"/api/v1/{resource}/", body, format="json")
    assert answer.status_code == 400, answer.content
    assert "url" in answer.json()["detail"]
    assert not Offer.objects.exists() and not Lander.objects.exists()


def test_the_admin_refuses_an_offer_with_a_macro_host(admin_client):
    page = admin_client.post(
        "/admin/campaigns/offer/add/",
        {"name": "X", "url": MACRO_HOSTS[0], "payout": "1", "currency": "USD",
         "payout_mode": "auto", "is_active": "on"},
    )  # fmt: skip
    assert page.status_code == 200 and "host must be written out" in page.content.decode()
    assert not Offer.objects.exists()
