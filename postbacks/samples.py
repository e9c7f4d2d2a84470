"""Sample macro values for previews, tests and template checks.

Pure data and one function over the macro catalogue: the transports check a JSON body
against these values, and ``postbacks.preview`` builds its contexts from them, without
either importing the other.
"""

from __future__ import annotations

from datetime import UTC, datetime

from postbacks.choices import EventType
from tracker import macros

SAMPLE_CLICK_ID = "3f1c9b2e-7d4a-4e8b-9c61-2a5d8e0f4b17"
SAMPLE_DELIVERY_ID = "0b7e4c2a-91d3-4f5e-8a6b-c2d4e6f80a13"
SAMPLE_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# Canonical macro name -> sample value. Macros not recorded yet stay empty, as they render.
SAMPLE_VALUES: dict[str, str] = {
    "externalid": "ts-click-123",
    **{f"var{i}": f"v{i}" for i in range(1, 11)},
    "trafficsource.id": "1",
    "trafficsource.name": "Taboola",
    "trafficsource.externalid_param": "click_id",
    "click.id": SAMPLE_CLICK_ID,
    "click.timestamp": str(int(SAMPLE_TIME.timestamp()) - 600),
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "referrer": "https://news.example/article?id=42",
    "referrerdomain": "news.example",
    "country": "GB",
    "countryname": "United Kingdom",
    "region": "England",
    "city": "London",
    "os": "iOS",
    "osversion": "17.5",
    "browser": "Mobile Safari",
    "browserversion": "17.5",
    "device": "mobile",
    "brand": "Apple",
    "model": "iPhone",
    "language": "en-GB",
    "isp": "Vodafone",
    "asn": "25135",
    "carrier": "Vodafone",
    "connection.type": "Cellular",
    "is_bot": "0",
    "lander.id": "5",
    "transaction.id": "TX-1001",
    "payout": "2.5",
    "payout_currency": "USD",
    "conversion.id": "1001",
    "conversion.type": "lead",
    "status": "approved",
    **{f"param{i}": f"p{i}" for i in range(1, 21)},
    "campaign.id": "7",
    "campaign.name": "Summer sale",
    "offer.id": "3",
    "offer.name": "Offer A",
    "affiliatenetwork.id": "2",
    "affiliatenetwork.name": "Network A",
    "event.type": EventType.CONVERSION,
    "timestamp": str(int(SAMPLE_TIME.timestamp())),
    "datetime": SAMPLE_TIME.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "delivery.id": SAMPLE_DELIVERY_ID,
}


def sample_values_context(event_type: str = "") -> dict[str, str]:
    """Every catalogue spelling mapped to its sample value (``""`` for macros without one).

    ``event.type`` is ``event_type`` (default ``conversion``); ``delivery.id`` is
    :data:`SAMPLE_DELIVERY_ID`. Touches no database.
    """
    values = {**SAMPLE_VALUES, "event.type": event_type or EventType.CONVERSION}
    context = {spelling: values.get(macro.name, "") for spelling, macro in macros.CATALOGUE.items()}
    context["delivery.id"] = SAMPLE_DELIVERY_ID
    return context
