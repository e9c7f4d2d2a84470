"""Traffic-source presets: every preset is usable as is, and the service that applies one."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError

from campaigns import presets
from campaigns.models import (
    VAR_SLOTS,
    Campaign,
    CampaignOffer,
    TrafficSource,
    TrafficSourceParameter,
    param_name_validator,
)
from postbacks.models import Delivery, PostbackRule
from postbacks.transports import get_transport
from tests import factories
from tracker import macros
from tracker.models import Click

ALL = list(presets.PRESETS.values())
WITH_POSTBACK = [p for p in ALL if p.postback_url]


def test_presets_cover_the_main_sources():
    assert len(presets.PRESETS) >= 14
    expected = {
        "taboola", "outbrain", "mgid", "revcontent", "zeropark", "propellerads", "exoclick",
        "trafficjunky", "facebook", "google_ads", "tiktok", "microsoft_ads", "richads",
        "trafficstars", "adsterra",
    }  # fmt: skip
    assert expected <= set(presets.PRESETS)


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.key)
def test_preset_is_complete(preset):
    assert presets.PRESETS[preset.key] is preset
    assert preset.name and preset.notes and preset.category
    assert preset.docs_url.startswith("https://")
    assert preset.evidence in presets.EVIDENCE_LABELS
    assert preset.postback_method == "GET"
    param_name_validator(preset.external_id_param)
    TrafficSource(name="x", external_id_param=preset.external_id_param).clean()


@pytest.mark.parametrize("preset", ALL, ids=lambda p: p.key)
def test_preset_parameters_are_valid(preset):
    slots = [p.slot for p in preset.parameters]
    params = [p.param for p in preset.parameters]
    names = [p.name for p in preset.parameters]
    assert len(set(slots)) == len(slots) and set(slots) <= set(VAR_SLOTS)
    assert len(set(params)) == len(params) and len(set(names)) == len(names)
    assert preset.external_id_param not in params
    for parameter in preset.parameters:
        param_name_validator(parameter.name)
        param_name_validator(parameter.param)
        assert parameter.placeholder


@pytest.mark.parametrize("preset", WITH_POSTBACK, ids=lambda p: p.key)
def test_preset_postback_url_is_valid(preset):
    url = preset.postback_url
    assert urlsplit(url).scheme in ("http", "https") and urlsplit(url).hostname
    assert macros.unknown_macros(url) == []
    get_transport("s2s").validate_template(url)  # raises ValidationError when not
    assert "{externalid}" in url
    # Values the manager fills in are never inside braces, so never read as macros.
    for value in preset.to_replace:
        assert not any(value in name for name in macros.find_macros(url))
    named_vars = {p.name for p in preset.parameters}
    for name in macros.find_macros(url):
        if name.startswith("var:"):
            assert name.removeprefix("var:") in named_vars


def test_presets_without_postback_say_why():
    for key in ("facebook", "google_ads", "microsoft_ads", "tiktok"):
        preset = presets.get(key)
        assert preset.postback_url == ""
        assert "not S2S URLs" in preset.notes and "No postback rule" in preset.notes


def test_get_and_choices():
    assert presets.get("taboola").name == "Taboola"
    with pytest.raises(KeyError, match="nope"):
        presets.get("nope")
    choices = presets.choices()
    assert {key for key, _ in choices} == set(presets.PRESETS)
    names = [name.lower() for _, name in choices]
    assert names == sorted(names)


def test_to_replace_lists_account_values_once():
    assert presets.get("propellerads").to_replace == ["REPLACE_WITH_AID", "REPLACE_WITH_TID"]
    assert presets.get("richads").to_replace == []


@pytest.mark.django_db
def test_source_from_preset_creates_source_parameters_and_rule():
    preset = presets.get("taboola")
    source, rule = presets.source_from_preset("taboola")
    assert source.name == "Taboola" and source.preset == "taboola"
    assert source.external_id_param == "click_id"
    assert source.external_id_placeholder == "{click_id}"
    rows = list(source.parameters.values_list("slot", "name", "param", "placeholder"))
    assert rows == [(p.slot, p.name, p.param, p.placeholder) for p in preset.parameters]
    assert rule.name == "Taboola postback"
    assert list(rule.traffic_sources.all()) == [source]
    assert not rule.campaigns.exists() and not rule.offers.exists()
    assert rule.event_type == "conversion" and rule.statuses == ["approved"]
    assert rule.url_template == preset.postback_url and rule.preset == "taboola"
    assert rule.kind == "s2s" and rule.http_method == "GET"
    assert rule.is_active is False  # REPLACE_WITH_EVENT_NAME still to fill in


@pytest.mark.django_db
def test_rule_is_active_when_nothing_needs_replacing():
    source, rule = presets.source_from_preset("richads")
    assert rule.is_active is True and source.external_id_placeholder == "[CLICK_ID]"


@pytest.mark.django_db
def test_conversion_api_preset_and_create_rule_false_make_no_rule():
    source, rule = presets.source_from_preset("facebook")
    assert rule is None and source.external_id_param == "fbclid"
    assert source.parameters.count() == len(presets.get("facebook").parameters)
    source, rule = presets.source_from_preset("mgid", create_rule=False)
    assert rule is None and source.preset == "mgid"
    assert not PostbackRule.objects.exists()


@pytest.mark.django_db
def test_name_clash_appends_a_number():
    first, _ = presets.source_from_preset("taboola")
    second, rule = presets.source_from_preset("taboola")
    third, _ = presets.source_from_preset("outbrain", name=" Taboola ")
    assert [first.name, second.name, third.name] == ["Taboola", "Taboola (2)", "Taboola (3)"]
    assert rule.name == "Taboola (2) postback"
    mine, _ = presets.source_from_preset("mgid", name="My MGID")
    assert mine.name == "My MGID"
    long_name = "x" * 100
    presets.source_from_preset("mgid", name=long_name)
    clash, _ = presets.source_from_preset("mgid", name=long_name)
    assert clash.name == "x" * 96 + " (2)"


@pytest.mark.django_db
def test_unknown_preset_creates_nothing():
    with pytest.raises(KeyError):
        presets.source_from_preset("nope")
    assert not TrafficSource.objects.exists()


@pytest.mark.django_db
def test_all_or_nothing(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise ValidationError("refused")

    monkeypatch.setattr(PostbackRule, "full_clean", refuse)
    with pytest.raises(ValidationError):
        presets.source_from_preset("taboola")
    assert not TrafficSource.objects.exists()
    assert not TrafficSourceParameter.objects.exists()


@pytest.mark.django_db
def test_every_preset_applies():
    for key in presets.PRESETS:
        source, rule = presets.source_from_preset(key)
        assert source.preset == key
        assert (rule is not None) == bool(presets.get(key).postback_url)
    assert TrafficSource.objects.count() == len(presets.PRESETS)


@pytest.mark.django_db
def test_click_and_conversion_through_a_preset_source_fire_its_postback(client):
    """The campaign URL built from the preset records the click ID and variables, and the
    conversion plans the preset's postback with them."""
    source, rule = presets.source_from_preset("clickadilla")
    rule.url_template = rule.url_template.replace("REPLACE_WITH_TOKEN", "tok")
    rule.is_active = True
    rule.save()
    campaign = Campaign.objects.create(name="C", traffic_source=source)
    CampaignOffer.objects.create(campaign=campaign, offer=factories.offer())
    response = client.get(f"/c/{campaign.key}", {"click_id": "ca-1", "campaign_id": "77"})
    assert response.status_code == 302
    click = Click.objects.get(campaign=campaign)
    assert click.external_id == "ca-1" and click.var1 == "77"
    answer = client.get("/cv", {"click_id": str(click.pk), "payout": "1.25"})
    assert answer.status_code == 200, answer.content
    delivery = Delivery.objects.get(rule=rule)
    query = parse_qs(urlsplit(delivery.url).query)
    assert query == {
        "token": ["tok"], "campaign_id": ["77"], "click_id": ["ca-1"], "payout": ["1.25"],
    }  # fmt: skip
