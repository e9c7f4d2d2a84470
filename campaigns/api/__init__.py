"""REST API resources of this app (serializers and viewsets), registered under /api/v1/.

Validation follows the admin: model ``full_clean`` (via :class:`StrictModelSerializer`) plus
the admin forms' own checks (status and parameter mappings, lander URL macros, fallback URL
without a scheme read as https, network key and preset), from the same domain modules
(:mod:`campaigns.mapping`). One module per resource; :func:`register` adds them all."""

from __future__ import annotations

from rest_framework.routers import BaseRouter

from campaigns.api.networks import AffiliateNetworkViewSet
from campaigns.api.offers import CampaignViewSet, LanderViewSet, OfferViewSet
from campaigns.api.sources import TrafficSourcePresetViewSet, TrafficSourceViewSet


def register(router: BaseRouter) -> None:
    """Add this app's viewsets to ``router``."""
    router.register("traffic-sources", TrafficSourceViewSet)
    router.register(
        "traffic-source-presets", TrafficSourcePresetViewSet, basename="traffic-source-preset"
    )
    router.register("affiliate-networks", AffiliateNetworkViewSet)
    router.register("offers", OfferViewSet)
    router.register("landers", LanderViewSet)
    router.register("campaigns", CampaignViewSet)
