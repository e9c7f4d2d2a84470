"""Tracker admin: visits, conversions, the inbound log. Importing registers the pages."""

from tracker.admin import (  # noqa: F401 -- registers
    conversions,
    currency,
    inbound,
    tokens,
    types,
    visits,
)
from tracker.admin.base import ClickSearchMixin, ReadOnlyAdminMixin

__all__ = ["ClickSearchMixin", "ReadOnlyAdminMixin"]
