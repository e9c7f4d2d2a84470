"""Click enrichment (tracker.enrichment): user agent, IP, language and referrer of a visit.

The user-agent and packaged-geo answers are those of the pinned ua-parser-builtins and
geoip2fast data; the MaxMind answers come from small ``.mmdb`` files built here with
mmdb-writer, configured through ``TRACKER_GEOIP_MMDB``.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import maxminddb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests import factories
from tests.conftest import examples
from tracker import enrichment
from tracker.models import Click, DeviceType, Impression

FIXTURES = Path(__file__).resolve().parents[2] / "tracker" / "fixtures"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1"
)
NO_GEO = ["127.0.0.1", "10.1.2.3", "::1", "not-an-ip", "203.0.113.7"]


def fixture_lines(name: str) -> list[str]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


UAS = fixture_lines("user_agents.txt")
IPS = fixture_lines("ips.txt")


def ua_like(*fragments: str) -> str:
    """The one fixture user agent with all ``fragments`` ("...$": at its end)."""

    def has(ua: str, fragment: str) -> bool:
        return ua.endswith(fragment[:-1]) if fragment.endswith("$") else fragment in ua

    (found,) = [ua for ua in UAS if all(has(ua, f) for f in fragments)]
    return found


@pytest.fixture(autouse=True)
def _fresh_caches():
    enrichment.cache_clear()
    yield
    enrichment.cache_clear()


# User agent


# Fixture user agent (by fragments) -> (device, os, browser, brand, model) expected.
EXPECTED_UAS = {
    ("Windows NT 10.0", "Chrome/120.0.0.0 Safari/537.36$"): (
        "desktop",
        "Windows",
        "Chrome",
        "",
        "",
    ),
    ("Macintosh",): ("desktop", "Mac OS X", "Safari", "Apple", "Mac"),
    ("iPhone OS 17_1_2",): ("mobile", "iOS", "Mobile Safari", "Apple", "iPhone"),
    ("SM-S911B",): ("mobile", "Android", "Chrome Mobile", "Samsung", "SM-S911B"),
    ("SAMSUNG SM-A536B",): ("mobile", "Android", "Samsung Internet", "Samsung", "SM-A536B"),
    ("Redmi Note 11",): ("mobile", "Android", "Chrome Mobile", "XiaoMi", "Redmi Note 11"),
    ("FBAN/FBIOS",): ("mobile", "iOS", "Facebook", "Apple", "iPhone14,5"),
    ("FB_IAB/FB4A",): ("mobile", "Android", "Facebook", "Google", "Pixel 7"),
    ("musical_ly",): ("mobile", "iOS", "TikTok", "Apple", "iPhone"),
    ("moto g(30)",): ("mobile", "Android", "Chrome Mobile", "Motorola", "g(30)"),
    ("Firefox/121",): ("desktop", "Windows", "Firefox", "", ""),
    ("Edg/120",): ("desktop", "Windows", "Edge", "", ""),
    ("X11; Linux x86_64",): ("desktop", "Linux", "Chrome", "", ""),
    ("iPad",): ("tablet", "iOS", "Mobile Safari", "Apple", "iPad"),
    ("Android 10; K)",): ("mobile", "Android", "Chrome Mobile", "", ""),
    ("Opera Mini",): ("mobile", "Android", "Opera Mini", "", ""),
    ("Googlebot",): ("bot", "", "Googlebot", "", ""),
    ("facebookexternalhit",): ("bot", "", "FacebookBot", "", ""),
    ("curl/",): ("bot", "", "curl", "", ""),
}


def test_every_fixture_user_agent_has_an_expectation():
    matched = sorted(ua_like(*fragments) for fragments in EXPECTED_UAS)
    assert matched == sorted(UAS)


@pytest.mark.parametrize("fragments", list(EXPECTED_UAS), ids=lambda f: f[0])
def test_fixture_user_agents(fragments):
    fields = enrichment.user_agent_fields(ua_like(*fragments))
    device, os_name, browser, brand, model = EXPECTED_UAS[fragments]
    assert (
        fields["device_type"],
        fields["os"],
        fields["browser"],
        fields["device_brand"],
        fields["device_model"],
    ) == (device, os_name, browser, brand, model)
    assert fields["is_bot"] is (device == "bot")
    assert fields["device_type"] in DeviceType.values


def test_versions_are_dotted_numbers():
    iphone = enrichment.user_agent_fields(ua_like("iPhone OS 17_1_2"))
    assert (iphone["os_version"], iphone["browser_version"]) == ("17.1.2", "17.1.2")
    chrome = enrichment.user_agent_fields(ua_like("SM-S911B"))
    assert (chrome["os_version"], chrome["browser_version"]) == ("13", "119.0.0.0")
    facebook = enrichment.user_agent_fields(ua_like("FBAN/FBIOS"))
    assert (facebook["os_version"], facebook["browser_version"]) == ("16.6", "440.0.0")


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [
        ("Mozilla/5.0 (PlayStation 4 3.11) AppleWebKit/537.73 (KHTML, like Gecko)", "console"),
        ("Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/79.0.3945.79 Safari/537.36 WebAppManager", "tv"),
        ("Mozilla/5.0 (Linux; Android 11; Pixel Watch) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/108.0.0.0 Mobile Safari/537.36", "wearable"),
        ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/119.0.0.0 Safari/537.36", "tablet"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "HeadlessChrome/120.0.0.0 Safari/537.36", "bot"),
        ("python-requests/2.31.0", "bot"),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bot"),
        ("Roku4640X/DVP-7.70 (297.70E04154A)", "other"),
        ("", ""),
        ("   ", ""),
    ],
)  # fmt: skip
def test_device_classes_beyond_the_fixtures(user_agent, device):
    fields = enrichment.user_agent_fields(user_agent)
    assert fields["device_type"] == device
    assert fields["is_bot"] is (device == "bot")


def test_user_agent_junk_is_cleaned_and_cut():
    fields = enrichment.user_agent_fields("Mozilla/5.0 (iPhone\x00; CPU iPhone OS 17_0 \ud800")
    assert fields["os"] == "iOS" and fields["device_type"] == "mobile"
    assert all("\x00" not in str(v) and "\ud800" not in str(v) for v in fields.values())
    long = enrichment.user_agent_fields("Mozilla/5.0 (Linux; Android 13; " + "X" * 5000 + ")")
    assert all(len(long[name]) <= enrichment.MAX_LENGTH[name] for name in enrichment.UA_FIELDS)


def test_user_agents_are_cached_per_string():
    first = enrichment.user_agent_fields(IPHONE)
    assert enrichment.user_agent_fields(IPHONE) is first
    assert enrichment._user_agent_fields.cache_info().hits >= 1


# IP


@pytest.mark.parametrize(
    ("ip", "country", "name"),
    [
        ("8.8.8.8", "US", "United States"),
        ("81.2.69.160", "GB", "United Kingdom"),
        ("2001:4860:4860::8888", "US", "United States"),
        ("::ffff:8.8.8.8", "US", "United States"),
    ],
)
def test_packaged_database_gives_country_and_as_name(ip, country, name):
    fields = enrichment.ip_fields(ip)
    assert (fields["country_code"], fields["country_name"]) == (country, name)
    assert fields["isp"]  # the AS organisation, e.g. GOOGLE
    assert (fields["region"], fields["city"], fields["asn"]) == ("", "", None)


def test_every_public_fixture_ip_gets_a_country():
    public = [ip for ip in IPS if ip not in NO_GEO]
    assert len(public) == 7
    for ip in public:
        fields = enrichment.ip_fields(ip)
        assert len(fields["country_code"]) == 2 and fields["country_name"], ip


@pytest.mark.parametrize(
    "ip",
    [*NO_GEO, "fe80::1", "100.64.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "ff02::1",
     "64:ff9b::808:808", "2001:db8::1", "", None, "1.2.3.4.5", "::ffff:10.0.0.1", "\x00"],
)  # fmt: skip
def test_private_reserved_and_malformed_addresses_get_no_geo(ip):
    assert enrichment.ip_fields(ip) == {**dict.fromkeys(enrichment.IP_FIELDS, ""), "asn": None}


def test_fixture_ips_in_visit_fields_never_break():
    for ip in IPS:
        fields = enrichment.visit_fields(ip, IPHONE, "", "")
        valid = ip != "not-an-ip"
        assert (fields["ip"] is not None) is valid
        if ip in NO_GEO:
            assert fields["country_code"] == "" and fields["country_name"] == ""


def test_a_broken_packaged_database_costs_the_geo_not_the_click(monkeypatch, caplog):
    def broken(self):
        raise OSError("truncated file")

    monkeypatch.setattr(enrichment, "_packaged_db", None)
    monkeypatch.setattr(enrichment._Packaged, "__init__", broken)
    with caplog.at_level(logging.ERROR, logger="tracker.enrichment"):
        fields = enrichment.visit_fields("8.8.8.8", IPHONE, "en", "")
    assert fields["country_code"] == "" and fields["os"] == "iOS" and fields["ip"] == "8.8.8.8"
    assert "could not be loaded" in caplog.text


# Anonymisation


@pytest.mark.parametrize(
    ("ip", "stored"),
    [
        ("81.2.69.160", "81.2.69.0"),
        ("2a03:2880:f10c:83:face:b00c:0:25de", "2a03:2880:f10c::"),
        ("::ffff:81.2.69.160", "81.2.69.0"),
        ("10.1.2.3", "10.1.2.0"),
    ],
)
def test_anonymised_ip_is_stored_after_a_lookup_on_the_full_address(settings, ip, stored):
    settings.TRACKER_ANONYMIZE_IP = True
    fields = enrichment.visit_fields(ip, IPHONE, "", "")
    assert fields["ip"] == stored
    full = enrichment.ip_fields(ip)
    assert fields["country_code"] == full["country_code"]


def test_anonymisation_is_off_by_default_and_leaves_junk_alone(settings):
    assert enrichment.visit_fields("81.2.69.160", "", "", "")["ip"] == "81.2.69.160"
    settings.TRACKER_ANONYMIZE_IP = True
    assert enrichment.visit_fields("not-an-ip", "", "", "")["ip"] is None
    assert enrichment.visit_fields(None, "", "", "")["ip"] is None
    with pytest.raises(ValueError):
        enrichment.anonymize_ip("not-an-ip")


# Accept-Language and referrer


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("en-US,en;q=0.9", "en-US"),
        ("fr;q=0.5, de-DE;q=0.8, *;q=0.1", "de-DE"),
        ("da, en-gb;q=0.8, en;q=0.7", "da"),
        ("en;q=0.8, fr;q=0.8", "en"),  # equal weights: the first
        ("*", ""),
        ("en;q=0, de;q=0", ""),
        ("en_US", "en-US"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
        ("x-private-subtag1-subtag2-subtag3", "x-private"),
        ("en-US;q=2", ""),
        (";;;,,,", ""),
        ("en-US\x00", ""),
        ("x" * 100, ""),
        ("en," * 1000, "en"),
        ("", ""),
        (None, ""),
    ],
)
def test_language_is_the_highest_weighted_tag(header, language):
    assert enrichment.language(header) == language
    assert len(enrichment.language(header)) <= 16


@pytest.mark.parametrize(
    ("referrer", "domain"),
    [
        ("https://News.Example:8443/a?b=1", "news.example"),
        ("http://user:pw@Host.EXAMPLE./", "host.example"),
        ("http://[2001:db8::1]:80/", "2001:db8::1"),
        ("//cdn.example/x", "cdn.example"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("http://[bad", ""),
        ("http://exa mple.com/", ""),
        ("http://\x00evil/", ""),
        ("news.example/page", ""),
        ("junk", ""),
        ("", ""),
        (None, ""),
        ("https://" + "a" * 300 + ".example/", "a" * 255),
    ],
)
def test_referrer_domain(referrer, domain):
    assert enrichment.referrer_domain(referrer) == domain


FAST = settings(max_examples=examples(200), deadline=None, database=None)


@FAST
@given(st.text(), st.text(), st.text(), st.one_of(st.none(), st.text(), st.ip_addresses()))
def test_visit_fields_never_raise_and_always_fit(user_agent, language, referrer, ip):
    fields = enrichment.visit_fields(
        None if ip is None else str(ip), user_agent, language, referrer
    )
    for name, limit in enrichment.MAX_LENGTH.items():
        assert isinstance(fields[name], str) and len(fields[name]) <= limit, name
        assert "\x00" not in fields[name]
        fields[name].encode("utf-8")  # storable
    assert fields["device_type"] in ["", *DeviceType.values]
    if fields["ip"] is not None:
        ipaddress.ip_address(fields["ip"])


def test_max_lengths_are_the_columns():
    for name, limit in enrichment.MAX_LENGTH.items():
        assert Click._meta.get_field(name).max_length == limit, name
        assert Impression._meta.get_field(name).max_length == limit, name


# MaxMind databases built here


def build_mmdb(path: Path, database_type: str, records: dict[str, dict], ip_version: int = 6):
    """A MaxMind DB of ``database_type`` with one record per network (IPv4 networks are
    reachable in an IPv6 tree, as in MaxMind's own files)."""
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description="test",
    )
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return str(path)


CITY_RECORDS = {
    "81.2.69.0/24": {
        "country": {"iso_code": "GB", "names": {"en": "United Kingdom", "de": "Vereinigtes"}},
        "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
        "city": {"names": {"en": "London"}},
    },
    # Overrides the packaged country (US) of 8.8.8.8: the mmdb answer wins.
    "8.8.8.0/24": {
        "country": {"iso_code": "DE"},  # no names: the name comes from pycountry
        "subdivisions": [{"names": {"de": "Hessen"}}],  # no English name: any
        "city": {"names": {"en": "Frankfurt am Main"}},
    },
    "2001:4860::/32": {"country": {"iso_code": "CH", "names": {"en": "Switzerland"}}},
}
ASN_RECORDS = {
    "81.2.64.0/18": {"autonomous_system_number": 20712, "autonomous_system_organization": "AAISP"},
    "8.8.8.0/24": {"autonomous_system_number": 15169, "autonomous_system_organization": "GOOGLE"},
}


@pytest.fixture
def mmdb(tmp_path):
    """Paths of a GeoLite2-City, a GeoLite2-ASN (IPv4 only), a GeoIP2-ISP and a
    GeoIP2-Connection-Type database."""
    isp = {
        "81.2.69.0/24": {
            "isp": "Andrews & Arnold",
            "mobile_network_code": "10",
            "mobile_country_code": "234",
            "autonomous_system_number": 20712,
        }
    }
    connection = {"81.2.69.0/24": {"connection_type": "Cellular"}}
    return {
        "city": build_mmdb(tmp_path / "city.mmdb", "GeoLite2-City", CITY_RECORDS),
        "asn": build_mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN", ASN_RECORDS, ip_version=4),
        "isp": build_mmdb(tmp_path / "isp.mmdb", "GeoIP2-ISP", isp),
        "connection": build_mmdb(tmp_path / "ct.mmdb", "GeoIP2-Connection-Type", connection),
    }  # fmt: skip


def test_the_built_databases_are_real_mmdb_files(mmdb):
    with maxminddb.open_database(mmdb["city"]) as reader:
        assert reader.metadata().database_type == "GeoLite2-City"
        assert reader.get("81.2.69.160")["city"]["names"]["en"] == "London"


def test_city_and_asn_databases_answer_and_win(settings, mmdb):
    settings.TRACKER_GEOIP_MMDB = [mmdb["city"], mmdb["asn"]]
    london = enrichment.ip_fields("81.2.69.160")
    assert london == {
        "country_code": "GB", "country_name": "United Kingdom", "region": "England",
        "city": "London", "isp": "AAISP", "asn": 20712, "carrier": "", "connection_type": "",
    }  # fmt: skip
    google = enrichment.ip_fields("8.8.8.8")
    assert (google["country_code"], google["country_name"]) == ("DE", "Germany")
    assert (google["region"], google["city"]) == ("Hessen", "Frankfurt am Main")
    assert (google["asn"], google["isp"]) == (15169, "GOOGLE")
    # IPv6 in an IPv4-only ASN database: that database is skipped, the others answer.
    v6 = enrichment.ip_fields("2001:4860:4860::8888")
    assert (v6["country_code"], v6["country_name"], v6["asn"]) == ("CH", "Switzerland", None)
    assert v6["isp"] == "GOOGLE"  # the packaged AS name
    # Not in the mmdb files: the packaged answer.
    assert enrichment.ip_fields("1.1.1.1")["country_code"] == "AU"
    assert enrichment.ip_fields("10.1.2.3")["country_code"] == ""
    kinds = [db["kind"] for db in enrichment.mmdb_databases()]
    assert kinds == ["ASN", "City"]


def test_isp_and_connection_type_databases(settings, mmdb):
    settings.TRACKER_GEOIP_MMDB = ",".join(mmdb[k] for k in ("connection", "isp", "asn", "city"))
    fields = enrichment.visit_fields("81.2.69.160", IPHONE, "en-GB", "https://news.example/")
    assert (fields["isp"], fields["carrier"], fields["asn"]) == (
        "Andrews & Arnold", "Andrews & Arnold", 20712,
    )  # fmt: skip
    assert (fields["connection_type"], fields["city"], fields["country_code"]) == (
        "Cellular", "London", "GB",
    )  # fmt: skip
    assert (fields["os"], fields["device_type"], fields["language"]) == ("iOS", "mobile", "en-GB")


def test_missing_and_foreign_mmdb_files_are_skipped_with_an_error(settings, mmdb, tmp_path, caplog):
    foreign = build_mmdb(tmp_path / "weather.mmdb", "Weather-Forecast", {"8.8.8.0/24": {"x": 1}})
    not_mmdb = tmp_path / "junk.mmdb"
    not_mmdb.write_bytes(b"not a database")
    settings.TRACKER_GEOIP_MMDB = [str(tmp_path / "missing.mmdb"), foreign, str(not_mmdb), "",
                                   mmdb["city"]]  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="tracker.enrichment"):
        fields = enrichment.ip_fields("81.2.69.160")
    assert fields["city"] == "London"
    assert caplog.text.count("TRACKER_GEOIP_MMDB") == 3
    assert "Weather-Forecast" in caplog.text


def test_mmdb_paths_accepts_a_list_or_a_comma_separated_string():
    assert enrichment.mmdb_paths(" a.mmdb, ,b.mmdb ") == ("a.mmdb", "b.mmdb")
    assert enrichment.mmdb_paths(["a.mmdb", ""]) == ("a.mmdb",)
    assert enrichment.mmdb_paths(None) == ()


# Through the endpoints


@pytest.mark.django_db
def test_click_row_carries_the_enrichment(client, settings):
    settings.TRACKER_PROXY_COUNT = 1
    campaign = factories.campaign()
    response = client.get(
        f"/c/{campaign.key}",
        {"external_id": "tbl-1"},
        HTTP_USER_AGENT=IPHONE,
        HTTP_X_FORWARDED_FOR="81.2.69.160",
        HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.9",
        HTTP_REFERER="https://News.Example/article?id=1",
    )
    assert response.status_code == 302
    click = Click.objects.get()
    assert (click.country_code, click.country_name) == ("GB", "United Kingdom")
    assert (click.os, click.os_version, click.device_type) == ("iOS", "17.1.2", "mobile")
    assert (click.browser, click.device_brand, click.device_model) == (
        "Mobile Safari", "Apple", "iPhone",
    )  # fmt: skip
    assert (click.language, click.referrer_domain, click.is_bot) == ("en-GB", "news.example", False)
    assert click.ip == "81.2.69.160" and click.isp


@pytest.mark.django_db
def test_impression_and_anonymised_click_through_the_endpoints(client, settings, mmdb):
    settings.TRACKER_PROXY_COUNT = 1
    settings.TRACKER_ANONYMIZE_IP = True
    settings.TRACKER_GEOIP_MMDB = [mmdb["city"]]
    campaign = factories.campaign()
    bot = ua_like("Googlebot")
    client.get(f"/i/{campaign.key}", HTTP_USER_AGENT=bot, HTTP_X_FORWARDED_FOR="81.2.69.160")
    impression = Impression.objects.get()
    assert (impression.is_bot, impression.device_type, impression.city) == (True, "bot", "London")
    assert impression.ip == "81.2.69.0"
    client.get(f"/c/{campaign.key}", HTTP_USER_AGENT="", HTTP_X_FORWARDED_FOR="not-an-ip")
    click = Click.objects.get()
    assert (click.ip, click.country_code, click.device_type) == ("127.0.0.0", "", "")


# The fixture table (printed; see the report with pytest -s)


def test_fixture_enrichment_table(capsys):
    user_agents = [enrichment.user_agent_fields(ua) for ua in UAS]
    ips = [enrichment.ip_fields(ip) for ip in IPS]
    rows = {
        "user agents": len(UAS),
        "  with an OS": sum(bool(f["os"]) for f in user_agents),
        "  with a device type": sum(bool(f["device_type"]) for f in user_agents),
        "  with a browser": sum(bool(f["browser"]) for f in user_agents),
        "  with a brand": sum(bool(f["device_brand"]) for f in user_agents),
        "  flagged bot": sum(f["is_bot"] for f in user_agents),
        "IPs": len(IPS),
        "  with a country": sum(bool(f["country_code"]) for f in ips),
        "  with an AS name (isp)": sum(bool(f["isp"]) for f in ips),
    }
    with capsys.disabled():
        print("\nfixture enrichment (packaged data, no mmdb):")
        for label, count in rows.items():
            print(f"  {label:26} {count}")
    assert rows["  with a device type"] == rows["  with a browser"] == len(UAS)
    assert rows["  with an OS"] == len(UAS) - 3  # the three bots name no OS
    assert rows["  flagged bot"] == 3
    assert rows["  with a country"] == len(IPS) - len(NO_GEO)


# Admin


@pytest.fixture
def enriched_clicks(db):
    from django.core.cache import cache

    cache.clear()
    campaign = factories.campaign()
    made = []
    for ip, user_agent in (("81.2.69.160", IPHONE), ("8.8.8.8", ua_like("Googlebot")),
                           ("1.1.1.1", ua_like("iPad"))):  # fmt: skip
        fields = enrichment.visit_fields(ip, user_agent, "en", "https://news.example/")
        made.append(factories.click(campaign, user_agent=user_agent, **fields))
    yield made
    cache.clear()


def test_click_list_shows_and_filters_the_enrichment_without_distinct(
    admin_client, enriched_clicks, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get("/admin/tracker/click/").content.decode()
    assert not [q["sql"] for q in queries if "DISTINCT" in q["sql"].upper()]
    for text in ("GB United Kingdom", "AU Australia", "iOS", "Mobile Safari", "Googlebot",
                 "Tablet", "Console", "By bot", "column-country_code", "column-device_type",
                 "column-os"):  # fmt: skip
        assert text in page, text
    with django_assert_max_num_queries(12):  # the country, OS and browser choices are cached
        admin_client.get("/admin/tracker/click/")

    def listed(query: str) -> set[str]:
        response = admin_client.get(f"/admin/tracker/click/?{query}")
        assert response.status_code == 200, query
        return {str(click.pk) for click in response.context["cl"].result_list}

    iphone, bot, ipad = (str(click.pk) for click in enriched_clicks)
    assert listed("country=GB") == {iphone}
    assert listed("device_type__exact=tablet") == {ipad}
    assert listed("is_bot__exact=1") == {bot}
    assert listed("os=iOS") == {iphone, ipad}
    assert listed("browser=Googlebot") == {bot}
    assert listed("country=ZZ") == set()  # offered although no recent row has it
    since = "created_at__range__gte_0={}-01-01&created_at__range__gte_1=00:00:00"
    assert listed(since.format(2000)) == {iphone, bot, ipad}
    assert listed(since.format(2999)) == set()


def test_click_and_impression_pages_group_the_enrichment(admin_client, enriched_clicks):
    click = enriched_clicks[0]
    page = admin_client.get(f"/admin/tracker/click/{click.pk}/change/").content.decode()
    for heading in ("Visitor", "Geo (from the IP)", "Network (from the IP)",
                    "Device (from the user agent)", "Custom variables"):  # fmt: skip
        assert f">{heading}</h2>" in page, heading
    for value in ("United Kingdom", "17.1.2", "news.example", "Mobile Safari"):
        assert value in page, value
    impression = Impression.objects.create(
        campaign=click.campaign,
        traffic_source=click.traffic_source,
        **enrichment.visit_fields("81.2.69.160", ua_like("Googlebot"), "", ""),
    )
    page = admin_client.get(f"/admin/tracker/impression/{impression.pk}/change/")
    assert page.status_code == 200 and "Googlebot" in page.content.decode()
    listing = admin_client.get("/admin/tracker/impression/?country=GB&is_bot__exact=1")
    assert list(listing.context["cl"].result_list) == [impression]
