"""Receiving the postback manager's CRM webhooks: check the signature, drop duplicates.

Standard library only; copy it into your CRM. The requests follow Standard Webhooks
(https://www.standardwebhooks.com/): ``webhook-id`` (the same on every retry),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``: ``v1,`` +
base64 HMAC-SHA256 of ``"{webhook-id}.{webhook-timestamp}.{raw body}"`` keyed with the
base64-decoded part of the secret after ``whsec_``; during a secret rotation it holds two
signatures separated by a space.

Run a demo receiver on port 8002 (beside `make run`'s 8000 and 8001)::

    WEBHOOK_SECRET=whsec_... python docs/verify_webhook.py 8002

:func:`sign` makes the headers for the other direction: the CRM's status updates to
``POST /crm/<rule id>/status`` are signed the same way, with the same secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60
BODY_MAX_BYTES = 1024 * 1024


class InvalidWebhook(Exception):
    """The request is not a webhook signed with our secret: answer 401, process nothing."""


def _signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> bytes:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def verify(
    secrets: str | Iterable[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> str:
    """The ``webhook-id`` of a request signed with one of ``secrets`` (during a rotation,
    the new and the old one) less than 5 minutes ago; raises InvalidWebhook otherwise.
    ``body``: the raw bytes received, before any JSON parsing."""
    secrets = [secrets] if isinstance(secrets, str) else list(secrets)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "").split()
    if not (msg_id and timestamp.isdigit() and signatures):
        raise InvalidWebhook("missing or malformed webhook-* headers")
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        raise InvalidWebhook("timestamp more than 5 minutes away: a replay, or a wrong clock")
    for secret in secrets:
        expected = _signature(secret, msg_id, timestamp, body)
        for entry in signatures:
            version, _, signature = entry.partition(",")
            # compare_digest takes the same time whatever the first differing byte.
            if version == "v1" and hmac.compare_digest(expected, signature.encode()):
                return msg_id
    raise InvalidWebhook("no signature matches the secret")


def sign(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Headers for a request the CRM sends (a status update): ``msg_id`` unique per update
    and without dots, reused when the CRM retries that update."""
    timestamp = str(int(time.time() if now is None else now))
    signature = _signature(secret, msg_id, timestamp, body).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
    }


class SeenIds:
    """webhook-ids processed in the last ``keep`` seconds: a retry of a delivery that was
    processed (its answer lost on the way back) is acknowledged, not processed twice.
    Keep them at least twice the tolerance; a database table or Redis in production."""

    def __init__(self, keep: float = 2 * TOLERANCE_SECONDS) -> None:
        self.keep = keep
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, msg_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.keep}
            if msg_id in self._seen:
                return False
            self._seen[msg_id] = now
            return True

    def forget(self, msg_id: str) -> None:
        """Let a retry of ``msg_id`` in again (its processing failed)."""
        with self._lock:
            self._seen.pop(msg_id, None)


def make_handler(
    secrets: str | Iterable[str], on_event: Callable[[dict], None]
) -> type[BaseHTTPRequestHandler]:
    """A request handler: 401 unless signed, 200 without calling ``on_event`` for a
    duplicate, else ``on_event(payload)`` then 200 (an exception: 500, and we retry)."""
    seen = SeenIds()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_MAX_BYTES:
                return self._answer(413, "too large")
            body = self.rfile.read(length)
            try:
                msg_id = verify(secrets, dict(self.headers), body)
            except InvalidWebhook as exc:
                return self._answer(401, str(exc))
            if not seen.first_time(msg_id):
                return self._answer(200, "duplicate")
            try:
                on_event(json.loads(body))
            except Exception:
                seen.forget(msg_id)
                return self._answer(500, "failed")
            return self._answer(200, "ok")

        def _answer(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8002
    handler = make_handler(
        os.environ["WEBHOOK_SECRET"].split(), lambda p: print(p.get("type", "event"), p, flush=True)
    )
    ThreadingHTTPServer(("0.0.0.0", port), handler).serve_forever()
