"""A small HTTP receiver on 127.0.0.1 that plays traffic source, affiliate network or CRM.

It records every request and answers as scripted (status, delay), which makes it the
postback destination of the demo, of the integration tests and of the benchmarks. With
``tracker_url`` set it also serves a demo offer page at ``/offer?s2=<click id>`` whose button
fires the affiliate network's S2S postback to the tracker's ``/cv``.
"""

from __future__ import annotations

import html
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class Received:
    """One request the receiver got. ``at``: Unix time, seconds."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)
    client_port: int = 0
    status: int = 0  # the HTTP status answered


@dataclass
class Reply:
    """A scripted answer: HTTP status, seconds to wait first, body, extra headers.

    Misbehaviours for tests: ``trickle`` sends the body one byte every ``trickle`` seconds;
    ``truncate`` announces the whole body but closes the connection half-way through it;
    ``content_type`` replaces ``text/plain; charset=utf-8`` (e.g. a bogus charset). ``body``
    may be bytes (sent as they are: a GIF pixel, a gzip stream with ``Content-Encoding``).
    """

    status: int = 200
    delay: float = 0.0
    body: str | bytes = "OK"
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0
    truncate: bool = False
    content_type: str = ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of new connections from many worker threads: the default backlog of 5 drops
    # SYNs and adds 1 s retransmit stalls.
    request_queue_size = 1024


class Receiver:
    """Threaded HTTP server; ``start()`` binds 127.0.0.1 (port 0 picks a free one)."""

    def __init__(
        self,
        port: int = 0,
        *,
        default: Reply | None = None,
        tracker_url: str = "",
        on_request: Callable[[Received], None] | None = None,
        responder: Callable[[Received], Reply] | None = None,
    ) -> None:
        self.default = default or Reply()
        self.tracker_url = tracker_url.rstrip("/")
        self.on_request = on_request
        # Picks the reply for each request (after the script runs out) instead of ``default``.
        self.responder = responder
        self.received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Condition()
        self._server = _Server(("127.0.0.1", port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, then with the default."""
        with self._lock:
            self._script.extend(replies)

    def start(self) -> Receiver:
        # stop() returns once the serving loop next looks at its flag: every 0.05 s here, not
        # socketserver's 0.5 s, which each test's receiver paid at its end.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until ``count`` requests arrived or ``timeout`` seconds passed; return them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            return list(self.received)

    def _record(self, item: Received) -> Reply:
        with self._lock:
            self.received.append(item)
            if self._script:
                reply = self._script.popleft()
            else:
                reply = self.responder(item) if self.responder else self.default
            item.status = reply.status
            self._lock.notify_all()
        if self.on_request:
            self.on_request(item)
        return reply

    def _offer_page(self, query: dict[str, str]) -> str:
        click_id = query.get("s2", "")
        params = {"click_id": click_id, "payout": "2.35", "txid": f"T-{uuid.uuid4().hex[:8]}"}
        postback = f"{self.tracker_url}/cv?{urlencode(params)}"
        return (
            "<!doctype html><title>Demo offer</title><h1>Demo offer page</h1>"
            f"<p>The affiliate network stored the click ID <code>{html.escape(click_id)}</code>."
            "</p><p>When the visitor converts, the network calls the tracker's S2S postback:</p>"
            f'<p><a href="{html.escape(postback)}">{html.escape(postback)}</a></p>'
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two sends; without this the body waits for the
            # client's delayed ACK (~40 ms).
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/offer" and receiver.tracker_url:
                    self._send(Reply(body=receiver._offer_page(query)), "text/html")
                    return
                item = Received(
                    self.command,
                    self.path,
                    query,
                    dict(self.headers),
                    body,
                    client_port=self.client_address[1],
                )
                reply = receiver._record(item)
                if reply.delay:
                    time.sleep(reply.delay)
                self._send(reply, "text/plain")

            def _send(self, reply: Reply, content_type: str) -> None:
                data = reply.body if isinstance(reply.body, bytes) else reply.body.encode()
                self.send_response(reply.status)
                self.send_header(
                    "Content-Type", reply.content_type or f"{content_type}; charset=utf-8"
                )
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if reply.truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif reply.trickle:
                    self._trickle(data, reply.trickle)
                else:
                    self.wfile.write(data)

            def _trickle(self, data: bytes, interval: float) -> None:
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(interval)
                except OSError:
                    self.close_connection = True  # the client gave up

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
