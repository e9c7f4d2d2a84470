import pytest
from django.core.exceptions import ValidationError

from postbacks.models import EventType, PostbackRule
from postbacks.services import rules_for, scope_of
from tests import factories

pytestmark = pytest.mark.django_db
URL = "https://ts.example/pb?cid={externalid}"


def matching(click, status="approved", ct="lead", event=EventType.CONVERSION):
    return {r.name for r in rules_for(event) if r.matches(scope_of(click), status, ct)}


def test_scope_and_firing_conditions():
    click = factories.click()
    other_source = factories.traffic_source("Outbrain")
    factories.rule(URL, name="global")
    factories.rule(URL, name="this source", sources=[click.traffic_source])
    factories.rule(URL, name="other source", sources=[other_source])
    factories.rule(URL, name="approved only", statuses=["approved"])
    factories.rule(URL, name="rejected only", statuses=["rejected"])
    factories.rule(URL, name="sales", conversion_types=["Sale"])
    factories.rule(URL, name="inactive", is_active=False)
    campaign_rule = factories.rule(URL, name="this campaign")
    campaign_rule.campaigns.add(click.campaign)
    network_rule = factories.rule(URL, name="other network")
    network_rule.affiliate_networks.create(name="Other network")

    assert matching(click) == {"global", "this source", "approved only", "this campaign"}
    assert matching(click, status="rejected", ct="SALE") == {
        "global", "this source", "rejected only", "sales", "this campaign",
    }  # fmt: skip


def test_click_rules_ignore_conversion_conditions():
    click = factories.click()
    factories.rule(URL, name="click rule", event_type=EventType.CLICK, statuses=["approved"])
    assert matching(click, status="", ct="", event=EventType.CLICK) == {"click rule"}
    assert matching(click) == set()


def test_rule_clean_validates_template_and_statuses():
    rule = PostbackRule(name="x", url_template="https://x/?a={nope}", statuses=["won"])
    with pytest.raises(ValidationError) as info:
        rule.full_clean()
    errors = info.value.message_dict
    assert "Unknown macro {nope}" in errors["url_template"][0]
    assert "Unknown status: won" in errors["statuses"][0]


def test_rules_are_cached_until_a_rule_changes(django_assert_num_queries):
    click = factories.click()
    rule = factories.rule(URL, name="first")
    assert matching(click) == {"first"}
    with django_assert_num_queries(0):
        assert matching(click) == {"first"}
    rule.traffic_sources.add(factories.traffic_source("Elsewhere"))
    assert matching(click) == set()
    factories.rule(URL, name="second")
    assert matching(click) == {"second"}
    rule.delete()
    assert matching(click) == {"second"}
