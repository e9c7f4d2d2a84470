"""The tracker's REST API resources, registered on the API router (``tracker.api.urls``)."""

from __future__ import annotations

from rest_framework.routers import BaseRouter

from tracker.api.clicks import ClickViewSet
from tracker.api.conversions import ConversionViewSet
from tracker.api.inbound import InboundRequestViewSet
from tracker.api.uploads import ConversionUploadViewSet


def register(router: BaseRouter) -> None:
    """Add this app's viewsets to ``router``."""
    router.register("clicks", ClickViewSet, basename="click")
    router.register("conversions", ConversionViewSet, basename="conversion")
    router.register("inbound-requests", InboundRequestViewSet, basename="inboundrequest")
    router.register("conversion-uploads", ConversionUploadViewSet, basename="conversionupload")
