"""Destination kinds: one transport class per kind, behind a tiny shared interface.

A transport renders a rule's template into a request when the event is written
(:meth:`Transport.prepare`) and sends a planned request later (:meth:`Transport.send`),
answering with a :class:`Result`. Adding a kind means one class and one ``REGISTRY`` line.
"""

from __future__ import annotations

import codecs
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import ClassVar

import requests
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from requests_hardened.ip_filter import InvalidIPAddress

from postbacks import macros
from postbacks.http import Deadline, deadline, http_session

logger = logging.getLogger(__name__)
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Outcome(models.TextChoices):
    """What one attempt came to; shared by transports, ``Attempt`` and the state machine."""

    DELIVERED = "delivered", "Delivered"
    RETRY = "retry", "Failed, will retry"
    FAILED = "failed", "Failed"


@dataclass
class PreparedRequest:
    """A request planned for a delivery: method, URL, body (text) and headers."""

    method: str
    url: str
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    """What one attempt got back.

    ``outcome`` is ``delivered``, ``retry`` (timeout, connection error, 408, 429, 5xx) or
    ``failed`` (any other answer, a refused destination or an unusable URL).
    ``retry_after``: seconds the destination asked us to wait (429 only), else None.
    """

    outcome: Outcome
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    duration_ms: int = 0
    retry_after: float | None = None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Transport:
    """Base class: a destination kind.

    Contract: :meth:`prepare` runs when the event is written and renders the rule's
    template with the macro context (values escaped for where they land: URL-encoded in a
    URL); :meth:`send` runs in a worker and **never raises**: whatever happens, it answers
    with a :class:`Result` (an unexpected error is a retryable result).
    """

    kind: ClassVar[str]
    label: ClassVar[str]

    def validate_template(self, template: str) -> None:
        """Raise ValidationError when ``template`` cannot be rendered into a request."""
        raise NotImplementedError

    def prepare(self, template: str, context: dict[str, str]) -> PreparedRequest:
        """The request to plan for one event; ``context`` from ``macros.build_context``."""
        raise NotImplementedError

    def send(self, request: PreparedRequest, timeout: float) -> Result:
        """Send ``request`` within ``timeout`` seconds of wall time; never raises."""
        raise NotImplementedError


class HttpTransport(Transport):
    """Sends a prepared request over HTTP and classifies the answer.

    ``timeout`` is one wall-clock deadline for connect, headers and body together (see
    ``postbacks.http.deadline``); the body is read up to ``POSTBACKS_RESPONSE_BODY_MAX_BYTES``.
    """

    def send(self, request: PreparedRequest, timeout: float) -> Result:
        started = time.monotonic()
        try:
            return self._send(request, timeout, started)
        except Exception as exc:  # the contract: never raise, whatever the destination did
            logger.exception("Unexpected error sending a postback")
            return Result(
                Outcome.RETRY, error=f"Unexpected error: {_describe(exc)}", duration_ms=_ms(started)
            )

    def _send(self, request: PreparedRequest, timeout: float, started: float) -> Result:
        cap = settings.POSTBACKS_RESPONSE_BODY_MAX_BYTES
        with deadline(timeout) as limit:
            try:
                response = http_session().request(
                    request.method,
                    request.url,
                    data=request.body.encode() if request.body else None,
                    headers=request.headers,
                    timeout=(min(5.0, timeout), timeout),
                    stream=True,
                )
                raw = self._read_body(response, cap, limit)
                if limit.expired:  # cut mid-answer: what was read may look complete
                    raise requests.exceptions.Timeout("deadline passed")
            except InvalidIPAddress as exc:
                return self._failed(started, f"Destination refused (private network): {exc}")
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
                return self._failed(started, f"Invalid URL: {exc}")
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
                if limit.expired or isinstance(exc, requests.exceptions.Timeout):
                    error = f"Timeout: no complete answer within {timeout:g} s ({_describe(exc)})"
                else:
                    error = _describe(exc)
                return Result(Outcome.RETRY, error=error, duration_ms=_ms(started))
            except OSError as exc:
                return Result(Outcome.RETRY, error=_describe(exc), duration_ms=_ms(started))
        body = raw[:cap].decode(_codec(response.encoding), errors="replace")
        return self.classify(response, body, _ms(started))

    @staticmethod
    def _read_body(response: requests.Response, cap: int, limit: Deadline) -> bytes:
        """Up to ``cap + 1`` bytes of the body, in chunks, against the deadline."""
        chunks: list[bytes] = []
        size = 0
        complete = False
        try:
            for chunk in response.iter_content(chunk_size=1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    break
                if not limit.remaining():
                    raise requests.exceptions.Timeout("deadline passed while reading the body")
            else:
                complete = True
        finally:
            if complete:
                response.raw.release_conn()  # fully read: keep the connection alive
            else:
                response.close()
        return b"".join(chunks)

    def classify(self, response: requests.Response, body: str, duration_ms: int) -> Result:
        """2xx delivered; 408, 429 and 5xx retried; 3xx and other 4xx failed for good."""
        code = response.status_code
        result = Result(
            Outcome.FAILED, status_code=code, response_body=body, duration_ms=duration_ms
        )
        if 200 <= code < 300:
            result.outcome = Outcome.DELIVERED
        elif code in (408, 429) or code >= 500:
            result.outcome = Outcome.RETRY
            result.error = f"HTTP {code}"
            if code == 429:
                result.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        elif 300 <= code < 400:
            location = response.headers.get("Location", "")
            result.error = f"HTTP {code}: redirect to {location or '?'} not followed"
        else:
            result.error = f"HTTP {code}"
        return result

    @staticmethod
    def _failed(started: float, error: str) -> Result:
        return Result(Outcome.FAILED, error=error, duration_ms=_ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _codec(encoding: str | None) -> str:
    """A codec Python knows for a response charset; UTF-8 when it is missing or bogus."""
    try:
        return codecs.lookup(encoding or "utf-8").name
    except LookupError:
        return "utf-8"


class S2SPostback(HttpTransport):
    """Server-to-server postback: a GET to the traffic source's URL with macros filled in."""

    kind = "s2s"
    label = "S2S postback URL (GET)"

    def validate_template(self, template: str) -> None:
        scheme, sep, rest = template.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ValidationError("Enter an http:// or https:// URL.")
        host = rest.split("/", 1)[0].split("?", 1)[0]
        if not host or macros.MACRO_RE.search(host):
            raise ValidationError("The host must be written out, not a macro.")
        unknown = macros.unknown_macros(template)
        if unknown:
            names = ", ".join(f"{{{n}}}" for n in unknown)
            raise ValidationError(f"Unknown macro {names}. {macros.help_text()}")

    def prepare(self, template: str, context: dict[str, str]) -> PreparedRequest:
        headers = {}
        if context.get("delivery.id"):
            headers[IDEMPOTENCY_HEADER] = context["delivery.id"]
        return PreparedRequest(
            "GET", macros.render(template, context, url_encode=True), headers=headers
        )


REGISTRY: dict[str, type[Transport]] = {cls.kind: cls for cls in (S2SPostback,)}
KIND_CHOICES = [(kind, cls.label) for kind, cls in REGISTRY.items()]


def get_transport(kind: str) -> Transport:
    """The transport for a destination kind; raises KeyError for an unknown kind."""
    return REGISTRY[kind]()
