from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from postbacks import macros


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("2.350000"), "2.35"),
        (Decimal("10.000000"), "10"),
        (Decimal("0E-6"), "0"),
        (Decimal("-1.500000"), "-1.5"),
        (None, ""),
        (42, "42"),
    ],
)
def test_format_value(value, text):
    assert macros.format_value(value) == text


def test_render_url_encodes_values_and_keeps_the_template():
    context = {"externalid": "a b&c=d/é", "payout": "2.35"}
    url = "https://ts.example/pb?cid={externalid}&rev={payout}"
    assert (
        macros.render(url, context) == "https://ts.example/pb?cid=a%20b%26c%3Dd%2F%C3%A9&rev=2.35"
    )


def test_render_raw_and_missing_values():
    context = {"click_id": "x y"}
    assert macros.render("{click_id}|{payout}|{nope}", context, url_encode=False) == "x y||{nope}"


def test_unknown_macros_accepts_catalogue_and_named_vars():
    template = "https://x/?a={externalid}&b={var:site}&c={param20}&d={bogus}&e={txid}"
    assert macros.find_macros(template) == ["externalid", "var:site", "param20", "bogus", "txid"]
    assert macros.unknown_macros(template) == ["bogus"]


def make_click(**extra):
    params = [SimpleNamespace(name="site", slot=2)]
    source = SimpleNamespace(parameters=SimpleNamespace(all=lambda: params))
    fields = {f"var{i}": "" for i in range(1, 11)}
    fields.update(var2="news.example", **extra)
    return SimpleNamespace(
        pk="6f1c1c1e-0000-4000-8000-000000000001",
        external_id="tbl-1",
        campaign_id=3,
        offer_id=4,
        offer=SimpleNamespace(affiliate_network_id=5),
        traffic_source_id=6,
        traffic_source=source,
        ip="203.0.113.9",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **fields,
    )


def test_build_context_for_a_conversion_has_aliases_and_params():
    conversion = SimpleNamespace(
        pk=9,
        payout=Decimal("2.350000"),
        currency="USD",
        txid="T-1",
        conversion_type="lead",
        status="approved",
        rejection_reason="",
        params={"param1": "jane"},
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    context = macros.build_context(make_click(), conversion)
    assert context["externalid"] == context["external_id"] == "tbl-1"
    assert context["click_id"] == context["cf_click_id"] == context["click.id"]
    assert context["payout"] == "2.35"
    assert context["payout_currency"] == context["currency"] == "USD"
    assert context["txid"] == context["transaction.id"] == "T-1"
    assert context["conversion.type"] == "lead"
    assert context["var2"] == context["var:site"] == "news.example"
    assert context["param1"] == "jane" and context["param2"] == ""
    assert (context["campaign.id"], context["offer.id"], context["trafficsource.id"]) == (
        "3",
        "4",
        "6",
    )
    assert context["affiliatenetwork.id"] == "5"
    assert context["timestamp"] == str(int(conversion.created_at.timestamp()))
    assert set(macros.CATALOGUE) - {"delivery.id"} <= set(context)  # set per delivery


def test_build_context_for_a_click_leaves_conversion_macros_empty():
    context = macros.build_context(make_click())
    assert macros.render("{payout}|{txid}|{ip}", context) == "||203.0.113.9"
