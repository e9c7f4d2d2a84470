"""Inbound HTTP endpoints (see DESIGN.md for the answer shapes)."""

from tracker.views.common import client_ip, error
from tracker.views.conversions import conversion_postback
from tracker.views.visits import click, impression

__all__ = ["click", "client_ip", "conversion_postback", "error", "impression"]
