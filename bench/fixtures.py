"""Data the benchmarks share: one traffic source, network, offer, campaign and postback rule."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def campaign_with_rule(
    label: str, receiver_url: str, postback_path: str, payout: Decimal, **rule_fields: Any
) -> tuple[Any, Any, Any]:
    """Create "<label> source/network/offer/campaign/postback" pointing at ``receiver_url``.

    The offer URL is ``<receiver_url>/offer?s2={click_id}``; the rule is a conversion rule to
    ``receiver_url + postback_path`` with ``rule_fields`` on top. Returns (source, offer,
    campaign). Call after ``django.setup()``.
    """
    from campaigns.models import AffiliateNetwork, Campaign, CampaignOffer, Offer, TrafficSource
    from postbacks.models import EventType, PostbackRule

    source = TrafficSource.objects.create(name=f"{label} source", external_id_param="cid")
    network = AffiliateNetwork.objects.create(name=f"{label} network")
    offer = Offer.objects.create(
        name=f"{label} offer",
        affiliate_network=network,
        url=f"{receiver_url}/offer?s2={{click_id}}",
        payout=payout,
    )
    campaign = Campaign.objects.create(name=f"{label} campaign", traffic_source=source)
    CampaignOffer.objects.create(campaign=campaign, offer=offer)
    PostbackRule.objects.create(
        name=f"{label} postback",
        event_type=EventType.CONVERSION,
        url_template=receiver_url + postback_path,
        **rule_fields,
    )
    return source, offer, campaign


def bulk_clicks(source: Any, offer: Any, campaign: Any, count: int, prefix: str) -> list[Any]:
    """Insert ``count`` clicks on ``campaign`` from 127.0.0.1, external IDs ``<prefix>-<i>``."""
    from tracker.models import Click

    return Click.objects.bulk_create(
        (
            Click(
                campaign=campaign,
                offer=offer,
                traffic_source=source,
                external_id=f"{prefix}-{i}",
                ip="127.0.0.1",
            )
            for i in range(count)
        ),
        batch_size=2000,
    )
