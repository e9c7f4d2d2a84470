"""Tracker admin: visits, conversions, the inbound log. Importing registers the pages."""

from tracker.admin import conversions, currency, inbound, types, visits  # noqa: F401 -- registers
from tracker.admin.base import ClickSearchMixin, ReadOnlyAdminMixin

__all__ = ["ClickSearchMixin", "ReadOnlyAdminMixin"]
