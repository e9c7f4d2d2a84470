"""Inbound HTTP endpoints (see DESIGN.md for the answer shapes)."""

from tracker.views.common import client_ip, error
from tracker.views.conversions import conversion_pixel, conversion_postback, conversion_script
from tracker.views.visits import click, impression, lander_click

__all__ = [
    "click",
    "client_ip",
    "conversion_pixel",
    "conversion_postback",
    "conversion_script",
    "error",
    "impression",
    "lander_click",
]
