"""The dispatcher's HTTP client: one asyncio loop per worker process, on aiohttp.

Postbacks are I/O: at 0 ms receiver latency, ``requests`` on a thread pool spent about 1 ms
of CPU per postback (session merge, response objects, a thread per request in flight).
One event loop with a pooled ``aiohttp`` session does the same work at a fraction of it.
The same guarantees as :mod:`postbacks.http` hold:

- **Private networks refused** unless ``POSTBACKS_ALLOW_PRIVATE_NETWORKS``: a resolver that
  refuses private, loopback, link-local, multicast and reserved addresses (the ranges
  requests-hardened refuses), and the same check on IP literals, which skip resolution. The
  address checked is the address connected to (no second lookup to rebind).
- **No redirects** followed; **no proxy** from the environment.
- **One wall-clock deadline** per attempt (connect, headers and body), by
  ``asyncio.timeout``: a destination trickling its answer is cut at it.
- The body is read up to a cap (see :func:`fetch`).

With ``POSTBACKS_HTTP_PROXY`` set, the dispatcher keeps the ``requests`` path.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ipaddress
import os
import socket
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from django.conf import settings
from multidict import CIMultiDictProxy
from requests_hardened.ip_filter import _is_ip_in_extra_blocked_ranges


class PrivateAddressRefused(Exception):
    """The destination resolves to an address postbacks may not reach."""


def address_refused(address: str) -> bool:
    """Whether postbacks may not reach ``address`` (an IPv4 or IPv6 literal): private,
    loopback, link-local, multicast or one of requests-hardened's extra blocked ranges;
    an IPv4-mapped IPv6 address is judged as its IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_private or ip.is_multicast or _is_ip_in_extra_blocked_ranges(ip)


class GuardedResolver(AbstractResolver):
    """The system resolver (on a thread), refusing every answer that holds a refused address."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            if address_refused(answer["host"]):
                raise PrivateAddressRefused(answer["host"])
        return answers

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Answer:
    """What :func:`fetch` read: ``status_code``, ``headers``, ``encoding`` (the charset the
    response declared, or None), ``raw`` (at most ``cap + 1`` bytes of the decoded body).
    Shaped like the part of ``requests.Response`` transports classify."""

    status_code: int
    headers: CIMultiDictProxy[str]
    encoding: str | None
    raw: bytes


class Client:
    """This process's event loop (a daemon thread) and its aiohttp session."""

    def __init__(self, limit: int, limit_per_host: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.allow_private = settings.POSTBACKS_ALLOW_PRIVATE_NETWORKS
        self._limit, self._limit_per_host = limit, limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="postbacks-io")
        self._thread.daemon = True
        self._thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Close the session and stop the loop (at exit, and in tests); idempotent."""
        if not self._thread.is_alive():
            return
        if self._session is not None:
            with contextlib.suppress(Exception):
                self.submit(self._session.close()).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Run ``coroutine`` on the loop; a future of its result (thread-safe)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def session(self) -> aiohttp.ClientSession:
        """The pooled session (keep-alive), made on the loop's thread on first use."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                resolver=None if self.allow_private else GuardedResolver(),
                ttl_dns_cache=0 if not self.allow_private else 10,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=True,
                headers={"User-Agent": settings.POSTBACKS_USER_AGENT},
                skip_auto_headers=(),
            )
        return self._session

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
        cap: int,
    ) -> Answer:
        """One request under one wall-clock deadline of ``timeout`` seconds (connect within
        ``min(5, timeout)``); reads at most ``cap + 1`` bytes of the body. Raises
        ``TimeoutError`` past the deadline, :class:`PrivateAddressRefused`, ``ValueError``
        for a URL that cannot be requested, ``aiohttp.ClientError`` and ``OSError``."""
        host = urlsplit(url).hostname or ""
        if not self.allow_private and _is_literal(host) and address_refused(host):
            raise PrivateAddressRefused(host)
        async with asyncio.timeout(timeout):
            async with self.session().request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=min(5.0, timeout)),
            ) as response:
                raw = bytearray()
                while len(raw) <= cap:
                    chunk = await response.content.read(cap + 1 - len(raw))
                    if not chunk:
                        break
                    raw += chunk
                if len(raw) > cap:
                    response.close()  # the rest is not read: this connection is not reused
                return Answer(response.status, response.headers, response.charset, bytes(raw))


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


_clients: dict[int, Client] = {}
_lock = threading.Lock()


def client_close() -> None:
    """Close this process's client, if it has one (the next :func:`client` makes another)."""
    with _lock:
        for item in _clients.values():
            item.close()
        _clients.clear()


def client(limit: int, limit_per_host: int) -> Client:
    """The client of this process (a new one after a fork)."""
    pid = os.getpid()
    with _lock:
        if pid not in _clients:
            _clients.clear()
            _clients[pid] = Client(limit, limit_per_host)
        return _clients[pid]
