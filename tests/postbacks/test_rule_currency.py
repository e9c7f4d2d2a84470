"""A rule's payout currency: ``{payout}`` converted when deliveries are planned and in the
rule preview, the unconverted fallback with its note, and the field's validation in the
rule form and the model. Runs on PostgreSQL and SQLite."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from postbacks import preview
from postbacks.models import Delivery, PostbackRule
from postbacks.services import payout_in
from tests import factories
from tracker import currency
from tracker.models import ExchangeRate
from tracker.services import conversion_create

pytestmark = pytest.mark.django_db

URL = "https://ts.example/pb?c={externalid}&r={payout}&cur={payout_currency}"
ALIASES = "https://ts.example/pb?rev={revenue}&sum={sum}&cur={currency}&d={payout|0}"
D = Decimal
RULES = "/admin/postbacks/postbackrule/"


def form_data(**overrides) -> dict:
    """Every field of the rule form, as a browser posts it (unticked boxes left out)."""
    data = {
        "name": "Rule", "event_type": "conversion", "is_active": "on", "trigger": "both",
        "conversion_types": "", "delay_seconds": "0", "kind": "s2s", "http_method": "GET",
        "url_template": URL, "body_format": "none", "body_template": "",
        "headers_template": "", "payout_currency": "", "success_mode": "status",
        "success_pattern": "", "timeout_seconds": "10", "max_attempts": "10",
        "retry_base_seconds": "60", "disable_after_failures": "0",
    }  # fmt: skip
    data.update(overrides)
    return data


@pytest.fixture(autouse=True)
def _fresh_rates_cache():
    """Rates cached by an earlier test may have been rolled back with its transaction."""
    currency.rates_cache_clear()
    yield
    currency.rates_cache_clear()


@pytest.fixture
def eur():
    """1 EUR = 1.25 USD (USD is the display currency)."""
    return ExchangeRate.objects.create(currency="EUR", rate=D("1.25"))


@pytest.fixture
def campaign():
    source = factories.traffic_source()
    return factories.campaign(source, factories.offer(currency="USD"))


def convert(campaign, payout="10", code="USD", txid="T-1"):
    click = factories.click(campaign, external_id="ext-1")
    return conversion_create(click, payout=D(payout), currency=code, txid=txid)


def url_of(rule: PostbackRule) -> str:
    return Delivery.objects.get(rule=rule).url


def detail_of(rule: PostbackRule) -> str:
    return Delivery.objects.get(rule=rule).event_detail


# --- planning ------------------------------------------------------------------------------


def test_a_rule_in_eur_gets_the_payout_converted_and_others_are_untouched(campaign, eur):
    in_eur = factories.rule(URL, name="in EUR", payout_currency="EUR")
    plain = factories.rule(URL, name="as received")
    aliases = factories.rule(ALIASES, name="aliases in EUR", payout_currency="EUR")
    after = factories.rule(URL, name="after, as received")
    convert(campaign, payout="10")
    assert url_of(in_eur) == "https://ts.example/pb?c=ext-1&r=8&cur=EUR"
    assert url_of(plain) == "https://ts.example/pb?c=ext-1&r=10&cur=USD"
    assert url_of(aliases) == "https://ts.example/pb?rev=8&sum=8&cur=EUR&d=8"
    assert url_of(after) == "https://ts.example/pb?c=ext-1&r=10&cur=USD"
    assert detail_of(in_eur) == "created approved"


def test_cross_rate_between_two_foreign_currencies(campaign, eur):
    ExchangeRate.objects.create(currency="GBP", rate=D("1.6"))
    rule = factories.rule(URL, payout_currency="GBP")
    convert(campaign, payout="10", code="EUR")  # 12.5 USD = 7.8125 GBP
    assert url_of(rule) == "https://ts.example/pb?c=ext-1&r=7.8125&cur=GBP"


def test_a_rule_in_the_conversion_currency_sends_it_as_is(campaign, eur):
    rule = factories.rule(URL, payout_currency="EUR")
    convert(campaign, payout="4.20", code="EUR")
    assert url_of(rule) == "https://ts.example/pb?c=ext-1&r=4.2&cur=EUR"
    assert detail_of(rule) == "created approved"


def test_without_a_rate_the_payout_goes_unconverted_with_a_note(campaign):
    rule = factories.rule(URL, payout_currency="EUR")
    plain = factories.rule(URL, name="as received")
    convert(campaign, payout="10")
    assert url_of(rule) == "https://ts.example/pb?c=ext-1&r=10&cur=USD"
    assert detail_of(rule) == "created approved; payout sent in USD: no EUR rate"
    assert detail_of(plain) == "created approved"


def test_note_names_every_missing_rate(campaign):
    rule = factories.rule(URL, payout_currency="EUR")
    convert(campaign, payout="10", code="GBP")
    assert url_of(rule) == "https://ts.example/pb?c=ext-1&r=10&cur=GBP"
    assert detail_of(rule).endswith("payout sent in GBP: no GBP or EUR rate")


def test_status_change_deliveries_are_converted_too(campaign, eur):
    from tracker.services import conversion_status_change

    rule = factories.rule(URL, payout_currency="EUR", statuses=["approved"])
    conversion = convert(campaign, payout="10")
    conversion_status_change(conversion, "rejected", source="manual")
    conversion_status_change(conversion, "approved", source="manual")
    urls = list(Delivery.objects.filter(rule=rule).values_list("url", flat=True))
    assert urls == ["https://ts.example/pb?c=ext-1&r=8&cur=EUR"] * 2


def test_payout_in():
    ExchangeRate.objects.create(currency="EUR", rate=D("1.25"))
    values, missing = payout_in(D("10"), "USD", "EUR")
    assert missing == []
    assert {values[name] for name in ("payout", "revenue", "sum")} == {"8"}
    assert {values[name] for name in ("payout_currency", "currency")} == {"EUR"}
    assert payout_in(D("10"), "EUR", "EUR") == ({}, [])
    assert payout_in(D("10"), "USD", "") == ({}, [])
    assert payout_in(D("10"), "USD", "JPY") == ({}, ["JPY"])


# --- preview -------------------------------------------------------------------------------


def unsaved(**fields) -> PostbackRule:
    return PostbackRule(name="r", kind="s2s", url_template=URL, **fields)


def test_preview_with_sample_values_shows_the_converted_payout(eur):
    rendered = preview.render_preview(unsaved(payout_currency="EUR"))
    assert rendered["url"] == "https://ts.example/pb?c=ts-click-123&r=2&cur=EUR"  # 2.5 USD
    assert rendered["errors"] == []
    assert not any("Payout currency" in w for w in rendered["warnings"])
    plain = preview.render_preview(unsaved())
    assert plain["url"] == "https://ts.example/pb?c=ts-click-123&r=2.5&cur=USD"


def test_preview_of_a_real_conversion_in_the_rule_currency(campaign, eur):
    conversion = convert(campaign, payout="10")
    rendered = preview.render_preview(unsaved(payout_currency="EUR"), conversion)
    assert rendered["url"] == "https://ts.example/pb?c=ext-1&r=8&cur=EUR"


def test_preview_without_a_rate_warns_and_shows_the_unconverted_payout():
    rendered = preview.render_preview(unsaved(payout_currency="EUR"))
    assert rendered["url"] == "https://ts.example/pb?c=ts-click-123&r=2.5&cur=USD"
    assert (
        "Payout currency: EUR asked, but payout sent in USD: no EUR rate." in (rendered["warnings"])
    )


def test_preview_view_converts(admin_client, eur):
    answer = admin_client.post(
        f"{RULES}preview/", form_data(url_template=URL, payout_currency="eur")
    ).json()
    assert answer["errors"] == []
    assert answer["request"]["url"] == "https://ts.example/pb?c=ts-click-123&r=2&cur=EUR"


# --- validation ------------------------------------------------------------------------------


def test_rule_form_saves_the_currency_in_upper_case(admin_client, eur):
    response = admin_client.post(f"{RULES}add/", form_data(payout_currency=" eur "))
    assert response.status_code == 302
    assert PostbackRule.objects.get().payout_currency == "EUR"


def test_rule_form_has_the_field_in_the_destination(admin_client):
    page = admin_client.get(f"{RULES}add/").content.decode()
    assert 'name="payout_currency"' in page
    destination = page.index("Destination")
    assert page.index('name="url_template"') < page.index('name="payout_currency"')
    assert destination < page.index('name="payout_currency"') < page.index("Retries &amp;")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("XYZ", "XYZ is not an ISO 4217 currency code (e.g. EUR, GBP)"),
        ("eu", "EU is not an ISO 4217 currency code"),
        ("EURO", "Ensure this value has at most 3 characters"),
    ],
)
def test_rule_form_refuses_unknown_currencies(admin_client, value, message):
    response = admin_client.post(f"{RULES}add/", form_data(payout_currency=value))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["payout_currency"]
    assert any(message in str(error) for error in errors)
    assert not PostbackRule.objects.exists()


def test_saving_a_rule_without_a_rate_warns(admin_client):
    response = admin_client.post(f"{RULES}add/", form_data(payout_currency="CHF"), follow=True)
    page = response.content.decode()
    assert "no CHF exchange rate yet" in page
    assert PostbackRule.objects.get().payout_currency == "CHF"


def test_saving_a_rule_with_a_rate_does_not_warn(admin_client, eur):
    response = admin_client.post(f"{RULES}add/", form_data(payout_currency="EUR"), follow=True)
    assert "exchange rate yet" not in response.content.decode()


def test_model_clean_checks_the_currency():
    rule = PostbackRule(name="x", url_template=URL, payout_currency="XYZ")
    with pytest.raises(ValidationError) as info:
        rule.full_clean()
    assert info.value.message_dict["payout_currency"] == [
        "XYZ is not an ISO 4217 currency code (e.g. EUR)."
    ]
    rule.payout_currency = "EUR"
    rule.full_clean()
