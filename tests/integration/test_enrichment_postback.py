"""Click enrichment end to end: a click over HTTP from a known country, a conversion over
HTTP, and a Taboola-style postback whose URL carries the visitor's geo and device macros,
received by a local HTTP receiver through a real Celery worker (PostgreSQL, Redis)."""

from __future__ import annotations

import pytest
import requests

from postbacks.models import Delivery
from tests import factories
from tests.conftest import click_id_from, setup_campaign, wait_until
from tests.tracker.test_enrichment import CITY_RECORDS, IPHONE, build_mmdb
from tracker import enrichment
from tracker.models import Click

pytestmark = pytest.mark.integration
TEMPLATE = (
    factories.TABOOLA_PATH
    + "&country={country}&countryname={countryname}&os={os}&osversion={osversion}"
    + "&device={device}&browser={browser}&city={city|none}&lang={language}&lp={lander.id|0}"
)


@pytest.fixture(autouse=True)
def _fresh_enrichment():
    enrichment.cache_clear()
    yield
    enrichment.cache_clear()


def click_and_convert(live_server, campaign, forwarded_for: str, txid: str) -> Click:
    click = requests.get(
        f"{live_server.url}/c/{campaign.key}",
        params={"external_id": f"tbl-{txid}", "site": "news.example"},
        headers={
            "User-Agent": IPHONE,
            "X-Forwarded-For": forwarded_for,
            "Accept-Language": "en-GB,en;q=0.9",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert click.status_code == 302
    click_id = click_id_from(click)
    answer = requests.get(
        f"{live_server.url}/cv",
        params={"click_id": click_id, "payout": "2.35", "txid": txid},
        timeout=10,
    )
    assert answer.json()["status"] == "ok"
    return Click.objects.get(pk=click_id)


def received_query(receiver, count: int) -> dict[str, str]:
    received = receiver.wait_for(count)
    assert len(received) == count
    return received[-1].query


def test_taboola_postback_carries_the_visitors_country_and_os(
    worker, receiver, live_server, settings, tmp_path
):
    settings.TRACKER_PROXY_COUNT = 1
    campaign, _rule = setup_campaign(receiver, TEMPLATE)

    # The packaged database only: country, no city.
    click = click_and_convert(live_server, campaign, "81.2.69.160", "T-1")
    assert (click.country_code, click.os, click.device_type) == ("GB", "iOS", "mobile")
    assert received_query(receiver, 1) == {
        "click-id": "tbl-T-1", "name": "lead", "revenue": "2.35", "currency": "USD",
        "country": "GB", "countryname": "United Kingdom", "os": "iOS", "osversion": "17.1.2",
        "device": "mobile", "browser": "Mobile Safari", "city": "none", "lang": "en-GB",
        "lp": "0",
    }  # fmt: skip

    # With a MaxMind City database configured, its answer wins and the city arrives too.
    settings.TRACKER_GEOIP_MMDB = [
        build_mmdb(tmp_path / "city.mmdb", "GeoLite2-City", CITY_RECORDS)
    ]
    click = click_and_convert(live_server, campaign, "8.8.8.8", "T-2")
    assert (click.country_code, click.city) == ("DE", "Frankfurt am Main")
    query = received_query(receiver, 2)
    assert (query["country"], query["countryname"], query["city"]) == (
        "DE", "Germany", "Frankfurt am Main",
    )  # fmt: skip
    assert (query["click-id"], query["os"]) == ("tbl-T-2", "iOS")
    assert wait_until(
        lambda: (
            Delivery.objects.filter(status="delivered").count() == 2
            and not Delivery.objects.exclude(status="delivered").exists()
        )
    )
