"""The Django cache as an optional speed-up: pages that read it keep working without it.

The default cache is Redis when ``REDIS_URL`` is set. A Redis restart or outage must not
turn a page into a 500: a value that cannot be read is computed, one that cannot be stored
is not, and each failure is a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache

logger = logging.getLogger(__name__)
T = TypeVar("T")


def get_or_compute(key: str, seconds: float, compute: Callable[[], T]) -> T:
    """The value cached under ``key``, else ``compute()`` stored for ``seconds``.

    An unreachable cache (any error of its backend, e.g. ``redis.ConnectionError``) is
    logged as a warning and the value is computed; ``compute``'s own errors propagate.
    """
    try:
        value = cache.get(key)
    except Exception:
        logger.warning("The cache is unavailable: %s computed without it.", key, exc_info=True)
        return compute()
    if value is None:
        value = compute()
        try:
            cache.set(key, value, seconds)
        except Exception:
            logger.warning("The cache is unavailable: %s not stored.", key, exc_info=True)
    return value


def delete(key: str) -> None:
    """Forget ``key``; an unreachable cache is logged as a warning (it expires anyway)."""
    try:
        cache.delete(key)
    except Exception:
        logger.warning("The cache is unavailable: %s not deleted.", key, exc_info=True)
