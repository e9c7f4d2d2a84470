"""REST API resources of this app (serializers and viewsets), registered under /api/v1/."""

from __future__ import annotations

from rest_framework.routers import BaseRouter


def register(router: BaseRouter) -> None:
    """Add this app's viewsets to ``router``."""
