"""Pooled, hardened HTTP sessions and a wall-clock deadline per request.

``requests`` timeouts apply per socket operation: a destination that trickles one byte a
second never trips them. :func:`deadline` bounds a whole request (connect, headers, body)
by wall-clock time: a watchdog thread shuts the request's socket down when the deadline
passes, which makes the blocked read return at once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import requests
from django.conf import settings
from requests_hardened import Config, Manager
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection

_local = threading.local()


class Deadline:
    """One request's deadline; ``expired`` is set when the watchdog cut the connection."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self.connection: object | None = None
        self.finished = False
        self._lock = threading.Lock()

    def remaining(self) -> float:
        """Seconds left (monotonic clock); 0 when passed."""
        return max(0.0, self.at - time.monotonic())

    def cut(self) -> None:
        """Shut the connection in use down (watchdog side); no-op once finished."""
        with self._lock:
            if self.finished:
                return
            self.expired = True
            sock = getattr(self.connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        """The request is over: the watchdog must leave its connection alone."""
        with self._lock:
            self.finished = True
            self.connection = None


class _Watchdog:
    """A daemon thread that cuts the connections of requests past their deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, item: Deadline) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="postback-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (item.at, next(self._counter), item))
            if self._heap[0][2] is item:
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].cut()
                timeout = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout)


_watchdog = _Watchdog()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every request this thread makes inside the block to ``seconds`` of wall time.

    Yields the :class:`Deadline`; after it passes, reads raise a ``requests`` or ``urllib3``
    error and ``Deadline.expired`` is True.
    """
    item = Deadline(time.monotonic() + seconds)
    _local.deadline = item
    _watchdog.watch(item)
    try:
        yield item
    finally:
        _local.deadline = None
        item.finish()


class _DeadlinePoolMixin:
    def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
        # A mixin: the pool class after it in the MRO has _get_conn.
        conn: BaseHTTPConnection = super()._get_conn(timeout)  # type: ignore[misc]
        current = getattr(_local, "deadline", None)
        if current is not None:
            with current._lock:
                current.connection = conn
        return conn


class DeadlineHTTPConnectionPool(_DeadlinePoolMixin, HTTPConnectionPool):
    """An HTTP pool that lets the current :func:`deadline` reach the connection in use."""


class DeadlineHTTPSConnectionPool(_DeadlinePoolMixin, HTTPSConnectionPool):
    """An HTTPS pool that lets the current :func:`deadline` reach the connection in use."""


POOL_CLASSES = {"http": DeadlineHTTPConnectionPool, "https": DeadlineHTTPSConnectionPool}


def http_session() -> requests.Session:
    """The pooled, hardened ``requests`` session of this thread (keep-alive connections).

    No redirects are followed; private, loopback and link-local destinations are refused
    unless ``POSTBACKS_ALLOW_PRIVATE_NETWORKS`` is set; ``POSTBACKS_HTTP_PROXY`` is the only
    proxy used; connections are reachable by :func:`deadline`.
    """
    allow_private = settings.POSTBACKS_ALLOW_PRIVATE_NETWORKS
    proxy = settings.POSTBACKS_HTTP_PROXY
    sessions = _local.__dict__.setdefault("sessions", {})
    key = (allow_private, proxy)
    if key not in sessions:
        manager = Manager(
            Config(
                ip_filter_enable=not allow_private,
                ip_filter_allow_loopback_ips=False,
                never_redirect=True,
                default_timeout=(5, 10),
                user_agent_override=settings.POSTBACKS_USER_AGENT,
            )
        )
        session = manager.get_session()
        # Proxies come from settings, not from the environment: requests would otherwise
        # look up proxy variables and .netrc on every request.
        session.trust_env = False
        for adapter in session.adapters.values():
            managers = [adapter.poolmanager]
            if proxy:
                managers.append(adapter.proxy_manager_for(proxy))
            for pool_manager in managers:
                pool_manager.pool_classes_by_scheme = POOL_CLASSES
        if proxy:
            session.proxies = {"http": proxy, "https": proxy}
        sessions[key] = session
    return sessions[key]
