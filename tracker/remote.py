"""Who sent a request: the client's IP address, behind a known number of proxies.

Read by the inbound views, the REST API and the admin's manual conversion form alike.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The visitor's IP address as text, or None when it is not a valid address.

    ``REMOTE_ADDR`` unless ``TRACKER_PROXY_COUNT`` is set: anyone can send
    ``X-Forwarded-For``, so trusting it by default would let visitors choose their recorded
    IP and pass IP allowlists. With N proxies, each appending the address it was reached
    from, the visitor is the N-th address from the right of ``X-Forwarded-For`` (entries
    further left are whatever the client sent); ``REMOTE_ADDR`` when the header is missing
    or that entry is not an address.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    count = settings.TRACKER_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") if count else ""
    if forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        ip = _valid_ip(hops[-min(count, len(hops))])
        if ip is not None:
            return ip
    return _valid_ip(remote)


def _valid_ip(text: str) -> str | None:
    try:
        # Without an IPv6 zone ("%eth0"), which the database's address type refuses.
        return str(ipaddress.ip_address(text.partition("%")[0]))
    except ValueError:
        return None
