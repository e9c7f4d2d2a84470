"""Destination kinds: one transport class per kind, behind a tiny shared interface.

A transport renders a rule's template into a request when the event is written
(:meth:`Transport.prepare`) and sends a planned request later (:meth:`Transport.send`),
answering with a :class:`Result`. Adding a kind means one class and one ``REGISTRY`` line.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from requests_hardened import Config, Manager
from requests_hardened.ip_filter import InvalidIPAddress

from postbacks import macros

SECRET_PARAM_WORDS = ("key", "token", "secret", "password", "passwd", "signature", "auth")
MASK = "***"


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

    outcome: str
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    duration_ms: int = 0
    retry_after: float | None = None


def mask_url(url: str) -> str:
    """``url`` with the values of secret-looking query parameters (api_key, token...) masked."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    masked = [
        (k, MASK if any(w in k.lower() for w in SECRET_PARAM_WORDS) and v else v) for k, v in pairs
    ]
    if masked == pairs:
        return url
    return urlunsplit(parts._replace(query=urlencode(masked, safe="*")))


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


_local = threading.local()


def http_session() -> requests.Session:
    """The pooled, hardened ``requests`` session of this thread.

    No redirects are followed; private, loopback and link-local destinations are refused
    unless ``POSTBACKS_ALLOW_PRIVATE_NETWORKS`` is set; ``POSTBACKS_HTTP_PROXY`` is the only
    proxy used.
    """
    allow_private = settings.POSTBACKS_ALLOW_PRIVATE_NETWORKS
    sessions = _local.__dict__.setdefault("sessions", {})
    if allow_private not in sessions:
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
        if settings.POSTBACKS_HTTP_PROXY:
            session.proxies = {
                "http": settings.POSTBACKS_HTTP_PROXY,
                "https": settings.POSTBACKS_HTTP_PROXY,
            }
        sessions[allow_private] = session
    return sessions[allow_private]


class Transport:
    """Base class: a destination kind."""

    kind: ClassVar[str]
    label: ClassVar[str]

    def validate_template(self, template: str) -> None:
        """Raise ValidationError when ``template`` cannot be rendered into a request."""
        raise NotImplementedError

    def prepare(self, template: str, context: dict[str, str]) -> PreparedRequest:
        raise NotImplementedError

    def send(self, request: PreparedRequest, timeout: float) -> Result:
        raise NotImplementedError


class HttpTransport(Transport):
    """Sends a prepared request over HTTP and classifies the answer."""

    def send(self, request: PreparedRequest, timeout: float) -> Result:
        started = time.monotonic()
        cap = settings.POSTBACKS_RESPONSE_BODY_MAX_BYTES
        try:
            response = http_session().request(
                request.method,
                request.url,
                data=request.body.encode() if request.body else None,
                headers=request.headers,
                timeout=(min(5.0, timeout), timeout),
                stream=True,
            )
            try:
                raw = response.raw.read(cap + 1, decode_content=True) or b""
            finally:
                if len(raw) <= cap:
                    response.raw.release_conn()  # fully read: keep the connection alive
                else:
                    response.close()
        except InvalidIPAddress as exc:
            return self._failed(started, f"Destination refused (private network): {exc}")
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            return self._failed(started, f"Invalid URL: {exc}")
        except requests.exceptions.Timeout as exc:
            return Result("retry", error=f"Timeout: {exc}", duration_ms=_ms(started))
        except requests.exceptions.RequestException as exc:
            return Result("retry", error=f"{type(exc).__name__}: {exc}", duration_ms=_ms(started))
        body = raw[:cap].decode(response.encoding or "utf-8", errors="replace")
        return self.classify(response, body, _ms(started))

    def classify(self, response: requests.Response, body: str, duration_ms: int) -> Result:
        """2xx delivered; 408, 429 and 5xx retried; 3xx and other 4xx failed for good."""
        code = response.status_code
        result = Result("failed", status_code=code, response_body=body, duration_ms=duration_ms)
        if 200 <= code < 300:
            result.outcome = "delivered"
        elif code in (408, 429) or code >= 500:
            result.outcome = "retry"
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
        return Result("failed", error=error, duration_ms=_ms(started))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


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
        return PreparedRequest("GET", macros.render(template, context, url_encode=True))


REGISTRY: dict[str, type[Transport]] = {cls.kind: cls for cls in (S2SPostback,)}
KIND_CHOICES = [(kind, cls.label) for kind, cls in REGISTRY.items()]


def get_transport(kind: str) -> Transport:
    """The transport for a destination kind; raises KeyError for an unknown kind."""
    return REGISTRY[kind]()
