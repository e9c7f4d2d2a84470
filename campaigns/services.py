"""Per-process cache of what the click hot path reads: campaigns, offers, traffic sources.

``/c`` would otherwise spend five SELECTs per click (campaign, lander, traffic source
parameters, campaign offers, offers) before its INSERT. Entries live
``TRACKER_CAMPAIGN_CACHE_SECONDS``; saving or deleting a Campaign, CampaignOffer, Offer,
AffiliateNetwork, TrafficSource, TrafficSourceParameter (see ``CampaignsConfig.ready``) or
Lander clears the cache of the process that saved it at once; other
processes see the change within the cache time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings

from campaigns.models import Campaign, Offer, TrafficSource

T = TypeVar("T")
# key -> (loaded at, campaign); id -> (loaded at, traffic source); id -> (loaded at, offer)
_campaigns: dict[str, tuple[float, Campaign]] = {}
_sources: dict[int, tuple[float, TrafficSource]] = {}
_offers: dict[int, tuple[float, Offer]] = {}
_campaigns_by_id: dict[int, tuple[float, Campaign]] = {}


def _cached(store: dict, key: object, load: Callable[[], T | None]) -> T | None:
    """``store[key]`` while fresh, else ``load()`` kept in ``store`` (None is not kept)."""
    now = time.monotonic()
    cached = store.get(key)
    if cached and now - cached[0] < settings.TRACKER_CAMPAIGN_CACHE_SECONDS:
        return cached[1]
    value = load()
    if value is None:
        store.pop(key, None)
    else:
        store[key] = (now, value)
    return value


def campaign_for_click(key: str) -> Campaign | None:
    """The campaign with this key, active or paused, with its lander, traffic source, the
    source's parameters and its offer links (with offers) loaded; None when no campaign has
    the key. Callers check ``is_active``: a paused campaign sends visitors to its fallback
    URL and records nothing.

    The returned object is shared by the requests of this process: read it, never modify it.
    Unknown keys are not cached (a flood of random keys must not grow the cache).
    """
    now = time.monotonic()
    cached = _campaigns.get(key)
    if cached and now - cached[0] < settings.TRACKER_CAMPAIGN_CACHE_SECONDS:
        return cached[1]
    campaign = (
        Campaign.objects.select_related("traffic_source", "lander")
        .prefetch_related("traffic_source__parameters", "campaign_offers__offer__affiliate_network")
        .filter(key=key)
        .first()
    )
    if campaign is None:
        _campaigns.pop(key, None)
        return None
    _campaigns[key] = (now, campaign)
    _sources[campaign.traffic_source_id] = (now, campaign.traffic_source)
    return campaign


def traffic_source(pk: int) -> TrafficSource | None:
    """The traffic source with this id and its parameters loaded (cached like campaigns);
    None when it does not exist. Read-only, shared like :func:`campaign_for_click`.
    """
    return _cached(
        _sources,
        pk,
        lambda: TrafficSource.objects.prefetch_related("parameters").filter(pk=pk).first(),
    )


def offer(pk: int) -> Offer | None:
    """The offer with this id and its affiliate network loaded (cached like campaigns);
    None when it does not exist. Read-only, shared like :func:`campaign_for_click`.
    """
    return _cached(
        _offers, pk, lambda: Offer.objects.select_related("affiliate_network").filter(pk=pk).first()
    )


def campaign(pk: int) -> Campaign | None:
    """The campaign with this id, bare (for its name in macros; cached like the others);
    None when it does not exist. Read-only, shared like :func:`campaign_for_click`."""
    return _cached(_campaigns_by_id, pk, lambda: Campaign.objects.filter(pk=pk).first())


def cache_clear(**kwargs: object) -> None:
    """Forget every cached campaign and traffic source (a signal receiver: ignores its
    arguments)."""
    _campaigns.clear()
    _sources.clear()
    _offers.clear()
    _campaigns_by_id.clear()
