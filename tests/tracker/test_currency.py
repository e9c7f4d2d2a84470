"""Currencies: conversion through the rate table and its cache, the rates file loader (as a
function, a management command and an admin page), the rate admin and the offer currency
check. Runs on PostgreSQL and SQLite."""

from __future__ import annotations

import io
import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from campaigns.models import Offer
from tests import factories
from tracker import currency
from tracker.currency import Action
from tracker.models import ExchangeRate

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
RATES = "/admin/tracker/exchangerate/"
LOAD = f"{RATES}load/"
D = Decimal


@pytest.fixture(autouse=True)
def _fresh_rates_cache():
    """Rates cached by an earlier test may have been rolled back with its transaction."""
    currency.rates_cache_clear()
    yield
    currency.rates_cache_clear()


@pytest.fixture
def rates():
    """EUR and GBP in the default display currency, USD."""
    ExchangeRate.objects.create(currency="EUR", rate=D("1.25"))
    ExchangeRate.objects.create(currency="GBP", rate=D("1.6"))


def table() -> dict[str, Decimal]:
    return {r.currency: r.rate for r in ExchangeRate.objects.all()}


def actions(result: currency.RatesLoad) -> list[tuple[int, str, str]]:
    return [(line.line, line.currency, line.action) for line in result.lines]


# --- lookups and conversion -------------------------------------------------------------


def test_display_currency_and_iso_codes(settings):
    assert currency.display_currency() == "USD"
    settings.TRACKER_DISPLAY_CURRENCY = "EUR"
    assert currency.display_currency() == "EUR"
    assert currency.is_known("EUR") and currency.is_known("JPY")
    assert not currency.is_known("XYZ")
    assert not currency.is_known("EU")


def test_rate_of_the_display_currency_is_one_and_others_come_from_the_table(rates):
    assert currency.rate("USD") == 1
    assert currency.rate("EUR") == D("1.25")
    assert currency.rate("JPY") is None


def test_to_display(rates):
    assert currency.to_display(D("10"), "EUR") == (D("12.500000"), D("1.25"))
    assert currency.to_display(D("2.35"), "USD") == (D("2.350000"), D("1"))
    assert currency.to_display(D("10"), "JPY") == (None, None)


def test_convert_through_the_display_currency(rates):
    assert currency.convert(D("10"), "USD", "EUR") == D("8.000000")
    assert currency.convert(D("10"), "EUR", "USD") == D("12.500000")
    assert currency.convert(D("10"), "EUR", "GBP") == D("7.812500")
    assert currency.convert(D("1"), "USD", "GBP") == D("0.625000")
    assert currency.convert(D("10"), "EUR", "EUR") == D("10")


def test_convert_without_a_rate_is_none(rates):
    assert currency.convert(D("10"), "USD", "JPY") is None
    assert currency.convert(D("10"), "JPY", "EUR") is None
    assert currency.missing_rates("JPY", "EUR", "USD", "CHF", "JPY") == ["JPY", "CHF"]


def test_another_display_currency(settings, rates):
    """With EUR as display currency, rates are 1 unit in EUR; EUR itself is 1."""
    settings.TRACKER_DISPLAY_CURRENCY = "EUR"
    ExchangeRate.objects.create(currency="USD", rate=D("0.8"))
    assert currency.rate("EUR") == 1
    assert currency.to_display(D("10"), "USD") == (D("8.000000"), D("0.8"))
    assert currency.convert(D("8"), "EUR", "USD") == D("10.000000")


def test_conversion_records_its_display_payout_and_keeps_it(rates):
    """History is not rewritten: a later rate change leaves recorded conversions alone."""
    from tracker.services import conversion_create

    campaign = factories.campaign()
    conversion = conversion_create(
        factories.click(campaign), payout=D("10"), currency="EUR", txid="C-1"
    )
    ExchangeRate.objects.filter(currency="EUR").update(rate=D("2"))
    conversion.refresh_from_db()
    assert (conversion.display_payout, conversion.exchange_rate) == (D("12.5"), D("1.25"))
    assert conversion.display_currency == "USD"
    unknown = conversion_create(
        factories.click(campaign), payout=D("10"), currency="JPY", txid="C-2"
    )
    unknown.refresh_from_db()
    assert (unknown.display_payout, unknown.exchange_rate) == (None, None)


def test_rates_are_read_once_then_cached_until_a_rate_changes(rates, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert currency.rate("EUR") == D("1.25")
        assert currency.rate("GBP") == D("1.6")
        assert currency.rate("JPY") is None
        assert currency.convert(D("10"), "EUR", "GBP") == D("7.812500")
    with django_assert_num_queries(0):
        assert currency.rate("EUR") == D("1.25")
    rate = ExchangeRate.objects.get(currency="EUR")
    rate.rate = D("1.5")
    rate.save()
    assert currency.rate("EUR") == D("1.5")
    ExchangeRate.objects.create(currency="JPY", rate=D("0.0067"))
    assert currency.rate("JPY") == D("0.0067")
    rate.delete()
    assert currency.rate("EUR") is None


def test_cache_time_zero_reads_every_time(rates, settings, django_assert_num_queries):
    settings.TRACKER_RATES_CACHE_SECONDS = 0
    with django_assert_num_queries(2):
        currency.rate("EUR")
        currency.rate("EUR")


# --- the loader ---------------------------------------------------------------------------


def test_csv_with_header_creates_and_updates(rates):
    data = "currency,rate\nEUR,1.08\njpy,0.0067\nGBP,1.6\n"
    result = currency.rates_load(data)
    assert result.applied and result.ok
    assert actions(result) == [
        (2, "EUR", Action.UPDATED),
        (3, "JPY", Action.CREATED),
        (4, "GBP", Action.UNCHANGED),
    ]
    assert result.lines[0].previous == D("1.25")
    assert table() == {"EUR": D("1.08"), "GBP": D("1.6"), "JPY": D("0.0067")}
    assert result.summary() == "Exchange rates loaded: 1 created, 1 updated, 1 unchanged."


def test_csv_without_header_with_bom_crlf_quotes_comments_and_blank_lines():
    data = '\ufeff# rates of today\r\n"EUR","1.08"\r\n\r\n GBP , 1.27 ,\r\nCHF,1.1'
    result = currency.rates_load(data.encode("utf-8"))
    assert result.applied
    assert actions(result) == [
        (2, "EUR", Action.CREATED),
        (4, "GBP", Action.CREATED),
        (5, "CHF", Action.CREATED),
    ]
    assert table() == {"EUR": D("1.08"), "GBP": D("1.27"), "CHF": D("1.1")}


def test_json_object_with_bom_numbers_and_strings():
    data = b'\xef\xbb\xbf {"EUR": "1.08", "gbp": 1.27, "JPY": 0.0067}'
    result = currency.rates_load(data)
    assert result.applied
    assert actions(result) == [
        (1, "EUR", Action.CREATED),
        (2, "GBP", Action.CREATED),
        (3, "JPY", Action.CREATED),
    ]
    # JSON numbers are read as decimals: 1.27, not 1.2700000000000000177...
    assert table() == {"EUR": D("1.08"), "GBP": D("1.27"), "JPY": D("0.0067")}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("XYZ,1.1", "XYZ is not an ISO 4217 currency."),
        ("EU,1.1", "'EU' is not a three-letter ISO 4217 code (e.g. EUR)."),
        ("E1R,1.1", "'E1R' is not a three-letter ISO 4217 code (e.g. EUR)."),
        (",1.1", "A currency code is required."),
        ("CHF,0", "The rate must be greater than 0."),
        ("CHF,-1.2", "The rate must be greater than 0."),
        ("CHF,abc", "'abc' is not a number (use a dot for decimals, e.g. 1.08)."),
        ("CHF,1,08", "Expected two columns separated by a comma: currency,rate."),
        ("CHF;1.08", "Expected two columns separated by a comma: currency,rate."),
        ("CHF", "Expected two columns separated by a comma: currency,rate."),
        ("CHF,", "Expected two columns separated by a comma: currency,rate."),
        ("CHF,NaN", "The rate must be a finite number."),
        ("CHF,Infinity", "The rate must be a finite number."),
        ("CHF,0.00000000001", "The rate is too small: it rounds to 0 at 10 decimal places."),
        ("CHF,1e20", "The rate is too large (at most 14 digits before the decimal point)."),
        (
            "USD,0.93",
            "USD is the display currency, whose rate is always 1, but this file says 0.93: "
            "are its rates based on another currency?",
        ),
    ],
)
def test_a_bad_line_is_refused_and_nothing_is_applied(rates, line, message):
    result = currency.rates_load(f"EUR,2\n{line}\nJPY,0.0067\n")
    assert not result.applied and not result.ok
    assert actions(result) == [
        (1, "EUR", Action.UPDATED),
        (2, result.lines[1].currency, Action.REFUSED),
        (3, "JPY", Action.CREATED),
    ]
    assert result.lines[1].message == message
    assert table() == {"EUR": D("1.25"), "GBP": D("1.6")}  # all or nothing
    assert result.summary() == (
        "Nothing was changed: 1 line(s) refused (1 created, 1 updated, 1 refused)."
    )


def test_rates_are_rounded_to_ten_decimal_places():
    result = currency.rates_load("JPY,0.006712345678912")
    assert result.lines[0].rate == D("0.0067123457")
    assert table() == {"JPY": D("0.0067123457")}


def test_the_display_currency_at_one_is_ignored():
    """Provider files often list their base currency at 1: not an error, not stored."""
    result = currency.rates_load("USD,1.000\nEUR,1.08\n")
    assert result.applied
    assert actions(result) == [(1, "USD", Action.IGNORED), (2, "EUR", Action.CREATED)]
    assert table() == {"EUR": D("1.08")}


def test_duplicate_currencies_are_refused():
    result = currency.rates_load("EUR,1.08\nGBP,1.27\neur,1.09\n")
    assert [line.action for line in result.lines] == ["created", "created", "refused"]
    assert result.lines[2].message == "EUR already appears on line 1."
    assert table() == {}
    in_json = currency.rates_load('{"EUR": "1.08", "EUR": "1.09"}')
    assert in_json.lines[1].message == "EUR already appears on line 1."
    assert not in_json.applied


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", 'The rate must be a number or a string like "1.08".'),
        ("null", 'The rate must be a number or a string like "1.08".'),
        ('{"a": 1}', 'The rate must be a number or a string like "1.08".'),
        ("[1.08]", 'The rate must be a number or a string like "1.08".'),
        ('""', "The rate is missing."),
    ],
)
def test_json_values_that_are_not_numbers_are_refused(value, message):
    result = currency.rates_load(f'{{"CHF": {value}}}')
    assert result.lines[0].message == message
    assert not result.applied


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "no rates found (expected lines like EUR,1.08)."),
        (b"currency,rate\n\n# nothing\n", "no rates found (expected lines like EUR,1.08)."),
        ("EUR,1.08\n".encode("utf-16"), "the file is not UTF-8 text"),
        (b'{"EUR": 1.08', "not valid JSON"),
        (b"[1, 2]", "JSON must be an object of rates"),
        (b'"EUR,1.08\n', "line 1: not valid CSV"),
        (b"{}", "no rates found"),
    ],
)
def test_unreadable_files_change_nothing(rates, data, error):
    result = currency.rates_load(data)
    assert error in result.error
    assert result.summary().startswith("Nothing was changed: ")
    assert not result.applied and result.lines == []
    assert table() == {"EUR": D("1.25"), "GBP": D("1.6")}


def test_json_with_trailing_garbage_is_refused():
    result = currency.rates_load(b' {"EUR": 1} x')
    assert "not valid JSON" in result.error


def test_too_many_lines_is_not_a_rates_file():
    data = "\n".join(f"EUR,{i}" for i in range(1, currency.MAX_LINES + 2))
    assert "more than" in currency.rates_load(data).error


def test_dry_run_reports_without_writing(rates):
    result = currency.rates_load("EUR,1.08\nCHF,1.1\n", dry_run=True)
    assert not result.applied and result.ok
    assert actions(result) == [(1, "EUR", Action.UPDATED), (2, "CHF", Action.CREATED)]
    assert result.summary() == "Checked, nothing was changed: 1 created, 1 updated."
    assert table() == {"EUR": D("1.25"), "GBP": D("1.6")}


def test_loading_clears_the_rate_cache(rates):
    assert currency.rate("EUR") == D("1.25")
    currency.rates_load("EUR,1.1\nCHF,1.05")
    assert currency.rate("EUR") == D("1.1")
    assert currency.rate("CHF") == D("1.05")


def test_the_sample_file_loads():
    result = currency.rates_load((ROOT / "docs" / "exchange_rates_sample.csv").read_bytes())
    assert result.applied and result.ok
    assert table()["EUR"] == D("1.08")
    assert len(table()) == len(result.lines) >= 5


# --- the management command ---------------------------------------------------------------


def test_command_loads_a_file(tmp_path, rates):
    path = tmp_path / "rates.csv"
    path.write_text("currency,rate\nEUR,1.1\nCHF,1.05\n")
    out = io.StringIO()
    call_command("exchange_rates_load", str(path), stdout=out)
    text = out.getvalue()
    assert "Display currency: USD" in text
    assert "EUR" in text and "updated (was 1.25)" in text
    assert "CHF" in text and "created" in text
    assert "Exchange rates loaded: 1 created, 1 updated." in text
    assert table() == {"EUR": D("1.1"), "GBP": D("1.6"), "CHF": D("1.05")}


def test_command_refuses_a_bad_file_and_changes_nothing(tmp_path, rates):
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"EUR": "1.1", "XYZ": "2"}))
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"Nothing was changed: 1 line\(s\) refused"):
        call_command("exchange_rates_load", str(path), stdout=out)
    assert "refused: XYZ is not an ISO 4217 currency." in out.getvalue()
    assert table() == {"EUR": D("1.25"), "GBP": D("1.6")}


def test_command_dry_run_and_stdin(monkeypatch, rates):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"EUR,1.1\n")))
    out = io.StringIO()
    call_command("exchange_rates_load", "-", "--dry-run", stdout=out)
    assert "Checked, nothing was changed: 1 updated." in out.getvalue()
    assert table()["EUR"] == D("1.25")


def test_command_missing_file(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("exchange_rates_load", str(tmp_path / "nope.csv"))


# --- admin ---------------------------------------------------------------------------------


def test_changelist_shows_rates_inverse_display_currency_and_load_link(admin_client, rates):
    page = admin_client.get(RATES).content.decode()
    assert "The display currency is USD" in page
    assert "1 EUR = 1.25 USD" in page
    assert "1 USD = 0.8 EUR" in page
    assert "Euro" in page
    assert f'href="{LOAD}"' in page and "Load rates from a file" in page


def test_add_a_rate_in_lower_case(admin_client):
    response = admin_client.post(f"{RATES}add/", {"currency": " eur ", "rate": "1.08"})
    assert response.status_code == 302
    assert table() == {"EUR": D("1.08")}


@pytest.mark.parametrize(
    ("currency_code", "rate", "message"),
    [
        ("XYZ", "1", "XYZ is not an ISO 4217 currency."),
        ("USD", "1", "USD is the display currency (TRACKER_DISPLAY_CURRENCY): its rate is "
         "always 1 and is not stored."),
        ("EUR", "0", "The rate must be greater than 0."),
        ("EUR", "-2", "The rate must be greater than 0."),
        ("EUR", "1.000000000001", "Ensure that there are no more than 10 decimal places."),
    ],
)  # fmt: skip
def test_add_form_refuses_bad_rates(admin_client, currency_code, rate, message):
    response = admin_client.post(f"{RATES}add/", {"currency": currency_code, "rate": rate})
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert message in [str(m) for errors in form.errors.values() for m in errors]
    assert table() == {}


def test_add_form_refuses_a_second_rate_for_a_currency(admin_client, rates):
    response = admin_client.post(f"{RATES}add/", {"currency": "EUR", "rate": "1.1"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_change_form_says_which_display_currency(admin_client, rates):
    rate = ExchangeRate.objects.get(currency="EUR")
    page = admin_client.get(f"{RATES}{rate.pk}/change/").content.decode()
    assert "The display currency is USD" in page
    assert "1 unit of this currency in USD" in page


def test_load_page_applies_a_file_and_lists_each_line(admin_client, rates):
    upload = SimpleUploadedFile("rates.csv", b"\xef\xbb\xbfcurrency,rate\nEUR,1.1\nCHF,1.05\n")
    response = admin_client.post(LOAD, {"file": upload})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Exchange rates loaded: 1 created, 1 updated." in page
    assert "was 1.25" in page
    assert table() == {"EUR": D("1.1"), "GBP": D("1.6"), "CHF": D("1.05")}
    result = response.context["result"]
    assert actions(result) == [(2, "EUR", Action.UPDATED), (3, "CHF", Action.CREATED)]
    from django.contrib.admin.models import LogEntry

    assert LogEntry.objects.count() == 2


def test_load_page_refuses_a_bad_file_and_changes_nothing(admin_client, rates):
    upload = SimpleUploadedFile("rates.json", b'{"EUR": "1.1", "CHF": "-1"}')
    response = admin_client.post(LOAD, {"file": upload})
    page = response.content.decode()
    assert "Nothing was changed: 1 line(s) refused" in page
    assert "The rate must be greater than 0." in page
    assert "would be updated" in page
    assert table() == {"EUR": D("1.25"), "GBP": D("1.6")}


def test_load_page_check_only(admin_client):
    upload = SimpleUploadedFile("rates.csv", b"EUR,1.1\n")
    response = admin_client.post(LOAD, {"file": upload, "dry_run": "on"})
    assert "Checked, nothing was changed: 1 created." in response.content.decode()
    assert table() == {}


def test_load_page_without_a_file(admin_client):
    response = admin_client.post(LOAD, {})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert admin_client.get(LOAD).status_code == 200


def test_load_page_needs_add_and_change_permissions(client):
    user = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_exchangerate"))
    client.force_login(user)
    assert "Load rates from a file" not in client.get(RATES).content.decode()
    upload = SimpleUploadedFile("rates.csv", b"EUR,1.1\n")
    assert client.post(LOAD, {"file": upload}).status_code == 403
    assert table() == {}


# --- offer currency ------------------------------------------------------------------------


def test_offer_currency_must_be_iso_4217():
    offer = Offer(name="o", url="https://offer.example/?s2={cf_click_id}", currency="XYZ")
    with pytest.raises(ValidationError) as info:
        offer.full_clean(exclude=["affiliate_network"])
    assert info.value.message_dict["currency"] == [
        "XYZ is not an ISO 4217 currency code (e.g. USD, EUR)."
    ]
    offer.currency = "eur"
    with pytest.raises(ValidationError) as info:
        offer.full_clean(exclude=["affiliate_network"])
    assert info.value.message_dict["currency"] == ["Use a three-letter ISO 4217 code, e.g. USD."]
    offer.currency = "EUR"
    offer.full_clean(exclude=["affiliate_network"])
