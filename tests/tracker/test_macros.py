import hashlib
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from tests import factories
from tracker import macros
from tracker.models import Click

CLICK_ID = "6f1c1c1e-0000-4000-8000-000000000001"
NO_EXTERNAL_ID = (
    "No {externalid} macro: the traffic source cannot match the conversion to its click."
)
# Every token of ClickFlare's traffic-source postback table.
CLICKFLARE_TOKENS = [
    "country", "countryname", "region", "city", "os", "osversion", "browser", "browserversion",
    "device", "brand", "model", "language", "transaction.id", "click.id", "payout",
    "conversion.cost", "campaign.cpa", "externalid", "var1", "var2", "var3", "referrerdomain",
    "ip", "isp", "carrier", "connection.type", "campaign.id", "lander.id", "trafficsource.id",
    "offer.id",
]  # fmt: skip
UNRECORDED = ["conversion.cost"]
# What click enrichment records (tracker.enrichment): macro -> Visit field.
VISITOR_MACROS = {
    "country": "country_code", "countryname": "country_name", "region": "region",
    "city": "city", "os": "os", "osversion": "os_version", "browser": "browser",
    "browserversion": "browser_version", "device": "device_type", "brand": "device_brand",
    "model": "device_model", "language": "language", "isp": "isp", "carrier": "carrier",
    "connection.type": "connection_type",
}  # fmt: skip
ENRICHED = {
    "country_code": "GB", "country_name": "United Kingdom", "region": "England",
    "city": "London", "os": "iOS", "os_version": "17.1.2", "browser": "Facebook",
    "browser_version": "440.0.0", "device_type": "mobile", "device_brand": "Apple",
    "device_model": "iPhone14,5", "language": "en-GB", "isp": "Vodafone", "carrier": "Vodafone",
    "connection_type": "Cellular", "asn": 25135, "is_bot": False,
    "referrer_domain": "news.example",
}  # fmt: skip


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


# Rendering and escaping


def test_render_url_encodes_values_and_keeps_the_template():
    context = {"externalid": "a b&c=d/é", "payout": "2.35"}
    url = "https://ts.example/pb?cid={externalid}&rev={payout}"
    assert (
        macros.render(url, context) == "https://ts.example/pb?cid=a%20b%26c%3Dd%2F%C3%A9&rev=2.35"
    )


def test_render_raw_and_missing_values():
    context = {"click_id": "x y"}
    assert macros.render("{click_id}|{payout}|{nope}", context, url_encode=False) == "x y||{nope}"


@pytest.mark.parametrize(
    ("escape", "text"),
    [
        ("url", "a%20%22b%22%0D%0A%00%7B%7D%C3%A9"),
        ("json", 'a \\"b\\"\\r\\n\\u0000{}é'),
        ("header", 'a "b"{}é'),
        ("none", 'a "b"\r\n\x00{}é'),
    ],
)
def test_render_escapes_values_for_their_context(escape, text):
    context = {"externalid": 'a "b"\r\n\x00{}é'}
    assert macros.render("{externalid}", context, escape=escape) == text


def test_json_escape_fits_inside_a_json_string():
    context = {"externalid": 'quote " backslash \\ tab \t'}
    body = macros.render('{"id": "{externalid}"}', context, escape="json")
    assert json.loads(body) == {"id": context["externalid"]}


def test_url_encode_keyword_still_works_and_wins():
    context = {"externalid": "a b"}
    assert macros.render("{externalid}", context, url_encode=True, escape="none") == "a%20b"
    assert macros.render("{externalid}", context, url_encode=False) == "a b"


def test_unknown_escape_is_a_programming_error():
    with pytest.raises(ValueError, match="escape must be one of url, json, header, none"):
        macros.render("{ip}", {}, escape="html")


def test_lone_surrogates_are_replaced_not_raised():
    assert macros.render("{externalid}", {"externalid": "a\ud800b"}) == "a%3Fb"
    assert macros.render("{externalid}", {"externalid": "\udfff"}, escape="json") == "?"


def test_non_text_context_values_are_formatted():
    context = {"payout": Decimal("2.500"), "conversion.id": 7, "ip": None}
    assert macros.render("{payout}/{conversion.id}/{ip}", context) == "2.5/7/"


# Modifiers


STATUS_MAP = "{status:approved=1,rejected=0}"


@pytest.mark.parametrize(
    ("template", "context", "text"),
    [
        ("{payout|0}", {"payout": ""}, "0"),
        ("{payout|0}", {}, "0"),
        ("{payout|0}", {"payout": "2.5"}, "2.5"),
        ("{payout|n/a}", {}, "n%2Fa"),  # the default is escaped like a value
        ("{payout:raw|n/a}", {}, "n/a"),
        ("{externalid:raw}", {"externalid": "a b&c"}, "a b&c"),
        (STATUS_MAP, {"status": "approved"}, "1"),
        (STATUS_MAP, {"status": "rejected"}, "0"),
        (STATUS_MAP, {"status": "pending"}, "pending"),  # unmapped values pass through
        (STATUS_MAP, {"status": "Approved"}, "Approved"),  # keys match exactly
        ("{status:approved=1,*=2}", {"status": "pending"}, "2"),
        ("{status:approved=1,*=2}", {"status": ""}, "2"),
        ("{status:approved=1,rejected=0|0}", {"status": ""}, "0"),
        ("{status:approved=1,rejected=|none}", {"status": "rejected"}, "none"),
        ("{status: approved = 1 , rejected = 0 }", {"status": "approved"}, "1"),
        ("{status:approved=a b}", {"status": "approved"}, "a%20b"),
        ("{ip:md5}", {"ip": "203.0.113.9"}, hashlib.md5(b"203.0.113.9").hexdigest()),
        ("{ip:sha1}", {"ip": "203.0.113.9"}, hashlib.sha1(b"203.0.113.9").hexdigest()),
        ("{externalid:sha256}", {"externalid": " A "}, hashlib.sha256(b" A ").hexdigest()),
        ("{externalid:md5}", {"externalid": "é"}, hashlib.md5("é".encode()).hexdigest()),
        ("{externalid:md5}", {"externalid": ""}, ""),  # nothing to hash
        ("{externalid:md5|none}", {}, "none"),
        ("{param1:sha256:raw}", {"param1": "x"}, hashlib.sha256(b"x").hexdigest()),
        ("{status:approved=ok:md5}", {"status": "approved"}, hashlib.md5(b"ok").hexdigest()),
        ("{var:site}", {"var:site": "a b"}, "a%20b"),
        ("{var:site:raw}", {"var:site": "a b"}, "a b"),
        ("{var:site|none}", {}, "none"),
        ("{var:raw}", {"var:raw": "named raw"}, "named%20raw"),  # var: is a prefix
    ],
)
def test_modifiers(template, context, text):
    assert macros.render(template, context) == text


@pytest.mark.parametrize(
    "template",
    ["{ip:sha512}", "{ip:foo}", "{ip:}", "{status:a=1,b}", "{status:a=1,a=2}", "{status:=1}",
     "{status:a=1=2}", "{bogus}", "{bogus:raw}", "{bogus|0}", "{var:}", "{{}}", "{ip"],
)  # fmt: skip
def test_unknown_macros_and_malformed_modifiers_stay_verbatim(template):
    context = {"ip": "1.2.3.4", "status": "a"}
    assert macros.render(template, context) == template


def test_aliases_and_the_deprecated_spelling_resolve_to_the_canonical_value():
    context = {"click.id": CLICK_ID, "payout": "3", "conversion.cost": "0.5"}
    template = "{click_id} {cf_click_id} {clickid} {subid} {revenue} {sum} {campaign.cpa}"
    expected = f"{CLICK_ID} {CLICK_ID} {CLICK_ID} {CLICK_ID} 3 3 0.5"
    assert macros.render(template, context, escape="none") == expected


def test_find_and_unknown_macros_read_names_without_modifiers():
    template = (
        "https://x/?a={externalid}&b={var:site}&c={param20}&d={bogus}&e={txid}"
        "&f={status:approved=1|0}&g={var:zone:md5}&h={click-id}"
    )
    assert macros.find_macros(template) == [
        "externalid", "var:site", "param20", "bogus", "txid", "status", "var:zone", "click-id"
    ]  # fmt: skip
    assert macros.unknown_macros(template) == ["bogus", "click-id"]
    assert macros.unknown_macros("{var:}") == ["var:"]


@pytest.mark.parametrize(
    ("host", "found"),
    [("{externalid}.ts.example", True), ("ts.example{ip:md5}", True),
     ("{var:site}.example", True), ("ts.example", False), ("ts.example:8080", False)],
)  # fmt: skip
def test_macro_re_finds_macros_in_a_host(host, found):
    assert bool(macros.MACRO_RE.search(host)) is found


# Catalogue and help


def test_catalogue_entries_have_one_shape_and_unique_names():
    entries = macros.catalogue()
    keys = {"name", "group", "description", "aliases", "recorded", "deprecated"}
    assert all(set(entry) == keys for entry in entries)
    spellings = [n for e in entries for n in (e["name"], *e["aliases"])]
    assert len(spellings) == len(set(spellings))
    assert entries[0] == {
        "name": "externalid",
        "group": "Traffic source",
        "description": "The traffic source's click ID from the campaign URL.",
        "aliases": ["external_id", "externalId", "external_transaction_id"],
        "recorded": True,
        "deprecated": "",
    }


def test_catalogue_covers_clickflare_and_the_common_spellings():
    names = {e["name"] for e in macros.catalogue()}
    assert set(CLICKFLARE_TOKENS) <= names
    required = [
        "click.id", "click_id", "cf_click_id", "clickid", "subid", "externalid", "external_id",
        "transaction.id", "txid", "transaction_id", "payout", "revenue", "sum", "payout_currency",
        "currency", "conversion.id", "conversion.type", "ct", "status", "status.previous",
        "rejection_reason", "rejection_reason.label", "campaign.name", "offer.name",
        "trafficsource.name", "affiliatenetwork.id", "affiliatenetwork.name", "user_agent",
        "timestamp", "datetime", "event.type", "delivery.id",
    ]  # fmt: skip
    required += [f"var{i}" for i in range(1, 11)]
    required += [f"param{i}" for i in range(1, 21)]
    required += [f"conversionParameter{i}" for i in range(1, 21)]
    assert set(required) <= set(macros.CATALOGUE)
    assert "var:<name>" in names


def test_catalogue_says_what_is_not_recorded_and_what_is_deprecated():
    entries = {e["name"]: e for e in macros.catalogue()}
    assert sorted(n for n, e in entries.items() if not e["recorded"]) == sorted(
        [*UNRECORDED, "campaign.cpa"]
    )
    assert entries["campaign.cpa"]["deprecated"] == "Use {conversion.cost}."
    assert macros.CATALOGUE["campaign.cpa"].name == "conversion.cost"
    assert [n for n, e in entries.items() if e["deprecated"]] == ["campaign.cpa"]


def test_help_text_is_plain_text_listing_macros_and_modifiers():
    text = macros.help_text()
    assert "\n" not in text and "<b>" not in text and "&" not in text
    for fragment in ("{externalid}", "{var1}..{var10}", "{param1}..{param20}", "{var:<name>}",
                     "{status:approved=1,rejected=0,*=2}", "{payout|0}", "{name:sha256}",
                     "Not recorded yet (render empty): {conversion.cost}", "{country}",
                     "{external_id}"):  # fmt: skip
        assert fragment in text


# Context


def make_click(**extra):
    params = [SimpleNamespace(name="site", slot=2)]
    source = SimpleNamespace(name="Taboola", parameters=SimpleNamespace(all=lambda: params))
    network = SimpleNamespace(name="Net")
    fields = {f"var{i}": "" for i in range(1, 11)}
    fields.update(
        pk=CLICK_ID,
        external_id="tbl-1",
        campaign_id=3,
        campaign=SimpleNamespace(name="Spring"),
        offer_id=4,
        offer=SimpleNamespace(name="Diet", affiliate_network_id=5, affiliate_network=network),
        traffic_source_id=6,
        traffic_source=source,
        ip="203.0.113.9",
        user_agent="Mozilla/5.0",
        referrer="https://news.example/a?b=1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        var2="news.example",
    )
    fields.update(extra)
    return SimpleNamespace(**fields)


def make_conversion(**extra):
    fields = dict(
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
    fields.update(extra)
    return SimpleNamespace(**fields)


def test_build_context_for_a_conversion_has_aliases_and_params():
    conversion = make_conversion()
    context = macros.build_context(make_click(), conversion)
    assert context["externalid"] == context["external_id"] == "tbl-1"
    assert context["click_id"] == context["cf_click_id"] == context["click.id"] == CLICK_ID
    assert context["payout"] == context["revenue"] == context["sum"] == "2.35"
    assert context["payout_currency"] == context["currency"] == "USD"
    assert context["txid"] == context["transaction.id"] == "T-1"
    assert context["conversion.type"] == context["ct"] == "lead"
    assert context["var2"] == context["var:site"] == "news.example"
    assert context["param1"] == context["conversionParameter1"] == "jane"
    assert context["param2"] == ""
    assert (context["campaign.id"], context["offer.id"], context["trafficsource.id"]) == (
        "3",
        "4",
        "6",
    )
    assert context["affiliatenetwork.id"] == "5"
    assert context["timestamp"] == str(int(conversion.created_at.timestamp()))
    assert context["datetime"] == "2026-01-02T00:00:00Z"
    assert context["event.type"] == "conversion"
    assert context["status"] == "approved" and context["status.previous"] == ""
    assert set(macros.CATALOGUE) <= set(context)
    assert context["delivery.id"] == ""  # set per delivery by the planner


def test_build_context_names_the_elements_and_the_visit():
    context = macros.build_context(make_click())
    assert (context["campaign.name"], context["offer.name"]) == ("Spring", "Diet")
    assert (context["trafficsource.name"], context["affiliatenetwork.name"]) == ("Taboola", "Net")
    assert context["user_agent"] == "Mozilla/5.0"
    assert context["referrer"] == context["referer"] == "https://news.example/a?b=1"
    assert context["referrerdomain"] == "news.example"
    assert macros.build_context(make_click(referrer="http://[::1"))["referrerdomain"] == ""


def test_build_context_for_a_click_leaves_conversion_macros_empty():
    context = macros.build_context(make_click())
    assert macros.render("{payout}|{txid}|{ip}", context) == "||203.0.113.9"
    assert context["event.type"] == "click"
    assert context["datetime"] == "2026-01-01T00:00:00Z"


def test_unrecorded_macros_render_empty_or_their_default():
    context = macros.build_context(make_click(), make_conversion())
    assert all(context[name] == "" for name in UNRECORDED)
    assert macros.render("{conversion.cost|X}/{campaign.cpa|0}/{lander.id}", context) == "X/0/"


def test_visitor_macros_are_recorded_and_have_the_other_trackers_spellings():
    entries = {e["name"]: e for e in macros.catalogue()}
    for name in [*VISITOR_MACROS, "lander.id", "asn", "is_bot"]:
        assert entries[name]["recorded"], name
        assert "Not recorded" not in entries[name]["description"], name
        assert entries[name]["group"] == ("Campaign" if name == "lander.id" else "Visitor")
    aliases = {
        "country_code": "country", "geo": "country", "country_name": "countryname",
        "os_name": "os", "os_version": "osversion", "browser_name": "browser",
        "browser_version": "browserversion", "device_type": "device", "device_brand": "brand",
        "device_model": "model", "connection_type": "connection.type",
    }  # fmt: skip
    for alias, name in aliases.items():
        assert macros.CATALOGUE[alias].name == name
    assert macros.VISIT_FIELDS == VISITOR_MACROS


def test_build_context_fills_every_visitor_macro_from_the_enriched_click():
    context = macros.build_context(make_click(**ENRICHED, lander_id=12), make_conversion())
    for name, field in VISITOR_MACROS.items():
        assert context[name] == ENRICHED[field], name
        for alias in macros.CATALOGUE[name].aliases:
            assert context[alias] == ENRICHED[field], alias
    assert (context["asn"], context["is_bot"], context["lander.id"]) == ("25135", "0", "12")
    template = (
        "https://trc.taboola.com/pb?c={externalid}&geo={country}&os={os}%20{osversion}"
        "&dev={device}&b={browser:raw}&m={model}&city={city}&lang={language|xx}"
        "&isp={isp:md5}&ct={connection.type}&lp={lander.id|0}&bot={is_bot:1=yes,0=no}"
    )
    assert macros.render(template, context) == (
        "https://trc.taboola.com/pb?c=tbl-1&geo=GB&os=iOS%2017.1.2&dev=mobile&b=Facebook"
        "&m=iPhone14%2C5&city=London&lang=en-GB"
        f"&isp={hashlib.md5(b'Vodafone').hexdigest()}&ct=Cellular&lp=12&bot=no"
    )
    assert macros.render('{"geo": "{countryname}"}', context, escape="json") == (
        '{"geo": "United Kingdom"}'
    )


def test_visitor_macros_of_an_unenriched_click_are_empty():
    context = macros.build_context(make_click(country_code="", asn=None, is_bot=None))
    names = [*VISITOR_MACROS, "asn", "is_bot", "lander.id"]
    assert [context[name] for name in names] == [""] * len(names)
    assert macros.render("{country|XX}-{device|unknown}-{lander.id|0}", context) == "XX-unknown-0"
    bot = macros.build_context(make_click(is_bot=True, device_type="bot"))
    assert (bot["is_bot"], bot["device"]) == ("1", "bot")


def test_referrerdomain_prefers_the_recorded_domain():
    recorded = make_click(referrer="https://news.example/a", referrer_domain="recorded.example")
    assert macros.build_context(recorded)["referrerdomain"] == "recorded.example"
    older = make_click(referrer="https://Old.Example:8080/a", referrer_domain="")
    assert macros.build_context(older)["referrerdomain"] == "old.example"


@pytest.mark.django_db
def test_a_saved_click_renders_its_enrichment_and_lander():
    from campaigns.models import Lander

    lander = Lander.objects.create(name="Quiz", url="https://lp.example/?cid={click_id}")
    saved = factories.click(lander=lander, **ENRICHED)
    loaded = (
        Click.objects.select_related("campaign", "offer__affiliate_network", "traffic_source")
        .prefetch_related("traffic_source__parameters")
        .get(pk=saved.pk)
    )
    context = macros.build_context(loaded)
    assert (context["country"], context["os"], context["device"]) == ("GB", "iOS", "mobile")
    assert (context["lander.id"], context["asn"], context["is_bot"]) == (
        str(lander.pk), "25135", "0",
    )  # fmt: skip
    straight = macros.build_context(factories.click(saved.campaign))
    assert (straight["lander.id"], straight["is_bot"], straight["country"]) == ("", "0", "")


def test_build_context_for_a_status_change():
    changed = datetime(2026, 1, 3, 12, 30, tzinfo=UTC)
    conversion = make_conversion(
        status="rejected",
        rejection_reason="fraud",
        rejection_reason_label="Fraud suspected",
        status_changed_at=changed,
    )
    context = macros.build_context(make_click(), conversion, previous_status="approved")
    assert context["event.type"] == "event"
    explicit = macros.build_context(
        make_click(), conversion, event_type="conversion", previous_status="approved"
    )
    assert explicit["event.type"] == "conversion"
    assert (context["status"], context["status.previous"]) == ("rejected", "approved")
    assert context["rejection_reason"] == "fraud"
    assert context["rejection_reason.label"] == "Fraud suspected"
    assert context["timestamp"] == str(int(changed.timestamp()))
    rendered = macros.render("{status.previous:approved=1,*=0}", context)
    assert rendered == "1"


def test_build_context_without_a_rejection_label_attribute_is_empty():
    context = macros.build_context(make_click(), make_conversion(rejection_reason="fraud"))
    assert context["rejection_reason.label"] == ""


def test_build_context_for_an_impression_has_no_click_or_offer():
    impression = make_click(pk=77)
    del impression.offer, impression.offer_id
    context = macros.build_context(impression=impression)
    assert context["event.type"] == "impression"
    assert context["click.id"] == context["offer.id"] == context["offer.name"] == ""
    assert context["affiliatenetwork.id"] == ""
    assert (context["externalid"], context["campaign.id"], context["var:site"]) == (
        "tbl-1",
        "3",
        "news.example",
    )
    assert context["trafficsource.name"] == "Taboola"


def test_build_context_from_a_conversion_alone_reads_its_click():
    conversion = make_conversion(click=make_click())
    context = macros.build_context(None, conversion)
    assert (context["click.id"], context["externalid"]) == (CLICK_ID, "tbl-1")


def test_build_context_from_nothing_is_all_empty_but_the_event_type():
    context = macros.build_context(event_type="click")
    assert {value for name, value in context.items() if name != "event.type"} == {""}


def test_click_without_offer():
    context = macros.build_context(make_click(offer=None, offer_id=None))
    assert context["offer.id"] == context["affiliatenetwork.id"] == ""


@pytest.mark.django_db
def test_build_context_never_queries_for_names(django_assert_num_queries):
    created = factories.click()
    bare = Click.objects.prefetch_related("traffic_source__parameters").get(pk=created.pk)
    bare.offer  # noqa: B018  (the paths that build contexts have the offer loaded)
    with django_assert_num_queries(0):
        context = macros.build_context(bare)
    assert context["campaign.id"] == str(created.campaign_id)
    assert context["campaign.name"] == context["affiliatenetwork.name"] == ""
    assert context["offer.name"] == "Offer"
    loaded = (
        Click.objects.select_related("campaign", "offer__affiliate_network", "traffic_source")
        .prefetch_related("traffic_source__parameters")
        .get(pk=created.pk)
    )
    with django_assert_num_queries(0):
        context = macros.build_context(loaded)
    assert (context["campaign.name"], context["affiliatenetwork.name"]) == ("Campaign", "Network")
    assert context["var:site"] == "" and context["click.id"] == str(created.pk)


# Validation


def errors_of(template, **kwargs):
    return macros.validate(template, **kwargs)[0]


def warnings_of(template, **kwargs):
    return macros.validate(template, **kwargs)[1]


def test_a_good_template_has_no_errors_or_warnings():
    template = f"https://trc.taboola.com{factories.TABOOLA_PATH}&s={{status:approved=1|0}}"
    assert macros.validate(template) == ([], [])
    assert macros.validate(template.replace("externalid", "external_id")) == ([], [])


MALFORMED = (
    "write {name}, {name:modifier} or {name|default}, the name in letters, digits, '_', '.' or '-'."
)
MODIFIERS = "use raw, md5, sha1, sha256 or a mapping such as approved=1,rejected=0."
MAPPING = (
    "write value=replacement pairs separated by commas, e.g. approved=1,rejected=0 "
    "(*=x for any other value)."
)
ERRORS = [
    ("x/?c={externalid", "Unbalanced brace: '{' never closed near \"https://x/?c={externalid\"."),
    ("x/?c=externalid}", "Unbalanced brace: '}' without its '{' near \"x/?c=externalid}\"."),
    ("x/?c={{externalid}}", "Doubled braces in {{externalid}}: write {externalid}."),
    ("x/?c={{ ob_click_id }}", "Doubled braces in {{ ob_click_id }}: write {ob_click_id}."),
    ("x/?c={ip}&n=a b", 'Unencoded space near "//x/?c={ip}&n=a b": write %20 (or + in a query).'),
    ("x/?c={extrenalid}", "Unknown macro {extrenalid}; did you mean {externalid}?"),
    ("x/?c={ExternalID}", "Unknown macro {ExternalID}; did you mean {externalid}?"),
    ("x/?c={click-id}", "Unknown macro {click-id}; did you mean {click_id}?"),
    ("x/?c={zzzzzz}", "Unknown macro {zzzzzz}; see the macro list."),
    ("x/?c={$SUBID}", f"Malformed macro {{$SUBID}}: {MALFORMED}"),
    ("x/?c={ip:foo}", f"Unknown modifier :foo in {{ip:foo}}; {MODIFIERS}"),
    ("x/?c={ip:}", f"Unknown modifier : in {{ip:}}; {MODIFIERS}"),
    ("x/?c={ip:sha512}", "Unknown hash :sha512 in {ip:sha512}; use md5, sha1 or sha256."),
    ("x/?c={ip:SHA256}", "Unknown hash :SHA256 in {ip:SHA256}; use md5, sha1 or sha256."),
    ("x/?c={status:a=1,b}", f"Malformed mapping :a=1,b in {{status:a=1,b}}: {MAPPING}"),
    ("x/?c={var:}", "{var:}: name the custom variable, e.g. {var:site}."),
]  # fmt: skip


@pytest.mark.parametrize(("template", "error"), ERRORS)
def test_validation_errors(template, error):
    assert error in errors_of(f"https://{template}")


@pytest.mark.parametrize(
    "template",
    ["{status:a=1,a=2}", "{status:=1}", "{status:a=1=2}", "{status:a=1,,b=2}"],
)
def test_malformed_mappings(template):
    assert errors_of(template)[0].startswith(f"Malformed mapping :{template[8:-1]} in {template}")


def test_custom_variables_are_checked_against_the_rules_sources():
    template = "https://x/?c={externalid}&s={var:site}&z={var:x}"
    assert errors_of(template) == []
    assert errors_of(template, known_vars={"site", "zone"}) == [
        "Unknown custom variable {var:x}: this rule's traffic sources define site, zone."
    ]
    assert errors_of(template, known_vars=set()) == [
        "Unknown custom variable {var:site}: this rule's traffic sources define "
        "no custom variables.",
        "Unknown custom variable {var:x}: this rule's traffic sources define no custom variables.",
    ]


def test_validation_warnings():
    assert warnings_of("https://x/?p={payout}") == [NO_EXTERNAL_ID]
    assert warnings_of("https://x/?c={externalid}&cost={campaign.cpa}&g={country}") == [
        "{campaign.cpa} is deprecated: use {conversion.cost}.",
        "{campaign.cpa} is not recorded yet: it renders empty.",
    ]
    # A repeated macro warns once.
    assert warnings_of("https://x/?c={externalid}&a={conversion.cost}&b={conversion.cost}") == [
        "{conversion.cost} is not recorded yet: it renders empty."
    ]
    visitor = "&".join(f"{name}={{{name}}}" for name in [*VISITOR_MACROS, "lander.id"])
    assert warnings_of(f"https://x/?c={{externalid}}&{visitor}") == []


def test_json_context_allows_the_documents_own_braces():
    body = '{"click": "{externalid}", "value": {payout|0}, "meta": {"s": "{status:raw}"}}'
    assert macros.validate(body, context="json") == ([], [])
    assert errors_of(body, context="url")  # a URL must not have bare braces
    assert errors_of('{"c": "{externalid"}', context="json") == [
        'Unbalanced brace: \'{\' never closed near "{"c": "{externalid"}".'
    ]
    assert errors_of('{"c": "externalid}"}', context="json") == [
        'Unbalanced brace: \'}\' without its \'{\' near "c": "externalid}"}".'
    ]
    assert errors_of('{"c": "{{externalid}}"}', context="json") == [
        "Doubled braces in {{externalid}}: write {externalid}."
    ]
    assert errors_of('{"c": "{extrenalid}"}', context="json") == [
        "Unknown macro {extrenalid}; did you mean {externalid}?"
    ]


def test_header_and_text_contexts_allow_spaces():
    assert errors_of("Bearer {externalid}", context="header") == []
    assert errors_of("Bearer {externalid", context="header")
    assert errors_of("Conversion {payout} {payout_currency} for {externalid}", context="none") == []


def test_unknown_validation_context_is_a_programming_error():
    with pytest.raises(ValueError, match="context must be one of"):
        macros.validate("{ip}", context="xml")


def test_validate_or_raise_raises_every_error_and_returns_warnings():
    with pytest.raises(ValidationError) as raised:
        macros.validate_or_raise("https://x/?c={extrenalid}&h={ip:sha512}")
    assert raised.value.messages == [
        "Unknown macro {extrenalid}; did you mean {externalid}?",
        "Unknown hash :sha512 in {ip:sha512}; use md5, sha1 or sha256.",
    ]
    assert macros.validate_or_raise("https://x/?c={externalid}&g={conversion.cost}") == [
        "{conversion.cost} is not recorded yet: it renders empty."
    ]
    assert macros.validate_or_raise("https://x/?s={var:site}", known_vars={"site"}) == [
        NO_EXTERNAL_ID
    ]


def test_every_catalogue_spelling_validates():
    for spelling in macros.CATALOGUE:
        assert errors_of(f"https://x/?a={{{spelling}}}") == [], spelling
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_.\-]*", spelling)
