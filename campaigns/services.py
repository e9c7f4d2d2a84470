"""Per-process cache of what the click hot path reads: campaigns, offers, traffic sources.

``/c`` would otherwise spend five SELECTs per click (campaign, lander, traffic source
parameters, campaign offers, offers) before its INSERT. Entries live
``TRACKER_CAMPAIGN_CACHE_SECONDS``; saving or deleting a Campaign, CampaignOffer, Offer,
AffiliateNetwork, TrafficSource, TrafficSourceParameter (see ``CampaignsConfig.ready``) or
Lander clears the cache of the process that saved it at once; other
processes see the change within the cache time (and the next click: a campaign older than
that is answered while a thread loads it again, see :func:`campaign_for_click`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, connection

from campaigns.models import Campaign, Offer, TrafficSource

logger = logging.getLogger(__name__)
T = TypeVar("T")
_refreshing: set[str] = set()  # campaign keys being loaded again by a thread
_refresh_lock = threading.Lock()
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

    A cached campaign is answered at once, also when it is older than
    ``TRACKER_CAMPAIGN_CACHE_SECONDS``: then a thread of this process loads it again
    meanwhile (one per key at a time), so ``/c`` never waits on the database for a campaign
    it has seen, and while PostgreSQL is down it keeps redirecting with the copy it has.
    Only a campaign this process has not seen yet is read by the caller (DatabaseError when
    the database cannot be reached).

    The returned object is shared by the requests of this process: read it, never modify it.
    Unknown keys are not cached (a flood of random keys must not grow the cache).
    """
    cached = _campaigns.get(key)
    if cached is None:
        return _campaign_load(key)
    if time.monotonic() - cached[0] >= settings.TRACKER_CAMPAIGN_CACHE_SECONDS:
        with _refresh_lock:
            starting = key not in _refreshing
            _refreshing.add(key)
        if starting:
            threading.Thread(
                target=_campaign_refresh, args=(key,), name="campaign-refresh", daemon=True
            ).start()
    return cached[1]


def _campaign_refresh(key: str) -> None:
    """Load campaign ``key`` again on this thread; on a database error keep the cached copy
    (the next click after it tries again)."""
    try:
        _campaign_load(key)
    except DatabaseError as exc:
        logger.warning("Campaign %r not reloaded (%s): /c goes on with its cached copy.", key, exc)
    finally:
        connection.close()  # this thread's connection (back to the pool)
        with _refresh_lock:
            _refreshing.discard(key)


def _campaign_load(key: str) -> Campaign | None:
    now = time.monotonic()
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
