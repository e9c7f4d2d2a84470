"""Small model factories for tests: each builds a valid object with overridable fields."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from campaigns.models import (
    AffiliateNetwork,
    Campaign,
    CampaignOffer,
    Offer,
    TrafficSource,
    TrafficSourceParameter,
)
from postbacks.models import Delivery, EventType, PostbackRule, destination_host
from tracker.models import Click

TABOOLA_PATH = (
    "/actions-handler/log/3/s2s-action?click-id={externalid}&name=lead"
    "&revenue={payout}&currency={payout_currency}"
)


def traffic_source(name: str = "Taboola", **fields) -> TrafficSource:
    fields.setdefault("external_id_param", "external_id")
    fields.setdefault("external_id_placeholder", "{click_id}")
    source = TrafficSource.objects.create(name=name, **fields)
    TrafficSourceParameter.objects.create(
        traffic_source=source, slot=1, name="site", param="site", placeholder="{site}"
    )
    return source


def offer(name: str = "Offer", **fields) -> Offer:
    fields.setdefault("url", "https://offer.example/?s2={cf_click_id}")
    fields.setdefault("payout", Decimal("1.50"))
    if "affiliate_network" not in fields:
        fields["affiliate_network"], _ = AffiliateNetwork.objects.get_or_create(name="Network")
    return Offer.objects.create(name=name, **fields)


def campaign(source: TrafficSource | None = None, *offers: Offer, **fields) -> Campaign:
    source = source or traffic_source()
    created = Campaign.objects.create(name=fields.pop("name", "Campaign"), traffic_source=source)
    for item in offers or (offer(),):
        CampaignOffer.objects.create(campaign=created, offer=item)
    return created


def click(camp: Campaign | None = None, **fields) -> Click:
    camp = camp or campaign()
    fields.setdefault("external_id", "ext-123")
    first = camp.campaign_offers.first()
    return Click.objects.create(
        campaign=camp,
        offer=first.offer if first else None,
        traffic_source=camp.traffic_source,
        **fields,
    )


def rule(url: str, *, sources: list[TrafficSource] = (), **fields) -> PostbackRule:
    fields.setdefault("name", "Rule")
    fields.setdefault("event_type", EventType.CONVERSION)
    created = PostbackRule.objects.create(url_template=url, **fields)
    created.traffic_sources.set(sources)
    return created


def delivery(url: str, *, due_in: float = 0, **fields) -> Delivery:
    """A scheduled delivery of a new click to ``url``, due ``due_in`` seconds from now."""
    if "click" not in fields:
        fields["click"] = Click.objects.order_by("created_at").last() or click()
    fields.setdefault("idempotency_key", f"test:{uuid.uuid4()}")
    return Delivery.objects.create(
        event_type=EventType.CONVERSION,
        kind="s2s",
        url=url,
        host=destination_host(url),
        due_at=timezone.now() + timedelta(seconds=due_in),
        **fields,
    )
