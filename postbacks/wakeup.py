"""Coalesced wake-ups: one Celery message per burst of deliveries, not one per delivery.

At 200 conversions a second, publishing a wake-up for each one costs the web a broker
round trip per conversion and the worker a task, a claim and a record per conversion. A
flag in Redis (``POSTBACKS_WAKE_REDIS_URL``) says "a dispatcher has been woken and will
claim again":

- a publisher raises the flag (``SET NX PX``, one round trip) and publishes only if it was
  not raised already;
- a dispatcher about to go idle lowers the flag, *then* claims one last time. A delivery
  committed before a publisher found the flag raised is therefore seen by that last claim:
  the lowering comes after the publisher's check, which comes after the commit.

The flag lapses after ``POSTBACKS_WAKE_COALESCE_SECONDS`` (a dispatcher killed before
lowering it costs at most that long, and the sweeper's wake-up covers the rest). Without a
Redis URL (the file-system demo broker, RabbitMQ alone) or while Redis cannot be reached,
every wake-up is published, as before.
"""

from __future__ import annotations

import logging
import os
import threading

import redis
from django.conf import settings

logger = logging.getLogger(__name__)
FLAG_KEY = "postbacks:wake-pending"

_clients: dict[tuple[int, str], redis.Redis | None] = {}
_lock = threading.Lock()


def _client() -> redis.Redis | None:
    """This process's Redis client for the flag (None without a URL); one per fork."""
    key = (os.getpid(), settings.POSTBACKS_WAKE_REDIS_URL)
    if key in _clients:
        return _clients[key]
    with _lock:
        url = key[1]
        client = (
            redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
            if url
            else None
        )
        _clients.clear()
        _clients[key] = client
    return client


def flag_raise() -> bool:
    """Raise the flag; True when this call raised it (the caller publishes a wake-up),
    False when a dispatcher is already woken. True as well without Redis, or on a Redis
    error (publishing once too often is harmless; not publishing could delay a postback)."""
    client = _client()
    if client is None:
        return True
    ttl_ms = max(1, int(settings.POSTBACKS_WAKE_COALESCE_SECONDS * 1000))
    try:
        return bool(client.set(FLAG_KEY, b"1", nx=True, px=ttl_ms))
    except redis.RedisError:
        logger.debug("Wake-up flag unreadable; publishing", exc_info=True)
        return True


def flag_lower() -> None:
    """Lower the flag (a dispatcher about to claim one last time before it goes idle)."""
    client = _client()
    if client is None:
        return
    try:
        client.delete(FLAG_KEY)
    except redis.RedisError:
        logger.debug("Wake-up flag not lowered; it lapses by itself", exc_info=True)
