"""A rule's payout currency end to end: a conversion in USD arrives at the traffic source
in EUR, converted; a rule without a rate sends it unconverted and says so. PostgreSQL,
Redis, a real Celery worker and a local HTTP receiver; no mocks."""

from __future__ import annotations

from decimal import Decimal

import pytest

from postbacks.models import Delivery
from tests import factories
from tests.conftest import convert, wait_until
from tracker.models import Conversion, ExchangeRate

pytestmark = pytest.mark.integration

PATH = "/pb?click-id={externalid}&revenue={payout}&currency={payout_currency}&rule="


def delivered() -> bool:
    rows = Delivery.objects.all()
    return rows.count() == 3 and not rows.exclude(status="delivered").exists()


def test_usd_conversion_reaches_a_eur_rule_converted(worker, receiver, client):
    ExchangeRate.objects.create(currency="EUR", rate=Decimal("1.25"))  # display: USD
    source = factories.traffic_source()
    campaign = factories.campaign(source, factories.offer(currency="USD"))
    factories.rule(receiver.url + PATH + "eur", name="EUR", sources=[source], payout_currency="EUR")
    factories.rule(receiver.url + PATH + "usd", name="as received", sources=[source])
    chf = factories.rule(
        receiver.url + PATH + "chf", name="CHF", sources=[source], payout_currency="CHF"
    )

    convert(client, campaign, "tb-1", payout="10", payout_currency="USD", txid="T-1")

    received = {item.query["rule"]: item.query for item in receiver.wait_for(3)}
    assert (received["eur"]["revenue"], received["eur"]["currency"]) == ("8", "EUR")
    assert (received["usd"]["revenue"], received["usd"]["currency"]) == ("10", "USD")
    assert (received["chf"]["revenue"], received["chf"]["currency"]) == ("10", "USD")
    assert {query["click-id"] for query in received.values()} == {"tb-1"}
    assert wait_until(delivered)
    note = Delivery.objects.get(rule=chf).event_detail
    assert note == "created approved; payout sent in USD: no CHF rate"
    conversion = Conversion.objects.get()
    assert (conversion.payout, conversion.display_payout) == (Decimal("10"), Decimal("10"))
