"""``{var:name}`` is checked against the traffic sources a rule can fire for, also when it
is scoped by campaign (issue 17, defect 11)."""

from __future__ import annotations

import pytest

from campaigns.models import TrafficSourceParameter
from postbacks.models import PostbackRule
from tests import factories
from tests.postbacks.test_rule_admin import RULES, form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign():
    source = factories.traffic_source("PropellerAds")  # defines {var:site}
    TrafficSourceParameter.objects.create(
        traffic_source=source, slot=2, name="zone", param="zoneid", placeholder="{zoneid}"
    )
    return factories.campaign(source)


def test_the_admin_refuses_a_variable_the_campaigns_source_lacks(admin_client, campaign):
    url = "https://ts.example/pb?c={externalid}&z={var:zoneid}"
    data = form_data(url_template=url, campaigns=[str(campaign.pk)])
    response = admin_client.post(f"{RULES}add/", data)
    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["url_template"]
    assert "Unknown custom variable {var:zoneid}" in error and "site, zone" in error
    assert not PostbackRule.objects.exists()
    data["url_template"] = "https://ts.example/pb?c={externalid}&z={var:zone}"
    assert admin_client.post(f"{RULES}add/", data).status_code == 302
    assert PostbackRule.objects.get().campaigns.get() == campaign


def test_the_api_refuses_it_too(api, campaign):
    body = {
        "name": "Propeller",
        "url_template": "https://ts.example/pb?c={externalid}&z={var:zoneid}",
        "campaigns": [campaign.pk],
    }
    answer = api.post("/api/v1/postback-rules/", body, format="json")
    assert answer.status_code == 400, answer.content
    assert "{var:zoneid}" in str(answer.json()["detail"]["url_template"])
