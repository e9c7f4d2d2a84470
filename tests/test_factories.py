"""Every model of the project has a factory in tests/factories.py, and each makes a row."""

from __future__ import annotations

import factory
import pytest
from django.apps import apps

from tests import factories

pytestmark = pytest.mark.django_db

FACTORIES = {
    obj._meta.model: obj
    for obj in vars(factories).values()
    if isinstance(obj, type)
    and issubclass(obj, factory.django.DjangoModelFactory)
    and obj._meta.model is not None
}


def test_every_model_has_a_factory():
    models = {
        model
        for app in ("campaigns", "tracker", "postbacks")
        for model in apps.get_app_config(app).get_models()
    }
    assert sorted(m.__name__ for m in models - FACTORIES.keys()) == []


@pytest.mark.parametrize(
    "model", sorted(FACTORIES, key=lambda m: m.__name__), ids=lambda m: m.__name__
)
def test_each_factory_saves_a_row(model):
    row = FACTORIES[model]()
    assert model.objects.filter(pk=row.pk).exists()


def test_the_helpers_build_a_campaign_a_click_a_rule_and_a_delivery():
    campaign = factories.campaign()
    click = factories.click(campaign)
    rule = factories.rule("http://127.0.0.1:9/pb", sources=[campaign.traffic_source])
    delivery = factories.delivery("http://127.0.0.1:9/pb", due_in=60, rule=rule)
    assert click.offer == campaign.campaign_offers.get().offer
    assert click.traffic_source == campaign.traffic_source
    assert list(rule.traffic_sources.all()) == [campaign.traffic_source]
    assert (delivery.click, delivery.host, delivery.status) == (click, "127.0.0.1:9", "scheduled")
    assert factories.APITokenFactory().key
