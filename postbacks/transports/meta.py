"""Meta (Facebook) Conversions API: one web event per delivery.

Request (documented at
https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api and
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters)::

    POST {POSTBACKS_META_BASE_URL}/{version}/{pixel id}/events?access_token=<token>
    Content-Type: application/json
    Idempotency-Key: <delivery id>

    {"data": [{"event_name": "Purchase", "event_time": 1767323045,
               "event_id": "<txid>", "action_source": "website",
               "event_source_url": "<rule URL, when set>",
               "user_data": {"fbc": "fb.1.<click time, ms>.<fbclid>",
                             "client_ip_address": "203.0.113.7",
                             "client_user_agent": "Mozilla/5.0 ...",
                             "country": ["<sha256 of the lower-case country code>"]},
               "custom_data": {"value": 2.35, "currency": "USD", "order_id": "<txid>"}}],
     "test_event_code": "TEST123"}

``access_token`` is added at sending time (:meth:`MetaConversionsAPI.authorize`); the
planned URL, which the postback log shows, never holds it. ``fbc`` follows
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc
(``fb.<subdomain index 1>.<creation time in ms>.<fbclid>``, the fbclid unchanged).

Answers (https://developers.facebook.com/docs/graph-api/guides/error-handling): 200
``{"events_received": 1, "fbtrace_id": ...}`` is delivered; an error body
``{"error": {"message", "type", "code", "error_subcode", "is_transient", "fbtrace_id"}}``
(with any HTTP status) is classified by its code, see :data:`RETRY_CODES`.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from postbacks.transports.base import Outcome, PreparedRequest, Result, Secrets, parse_retry_after
from postbacks.transports.platform import (
    COMMON_EVENT_NAMES,
    ConversionAPI,
    base_url,
    click_id,
    click_time,
    clip,
    event_id,
    event_time,
    load_json,
    number,
    text,
    without_empty,
)

if TYPE_CHECKING:
    import requests

    from postbacks.models import PostbackRule

# Graph API v25.0 (18 Feb 2026) is available until 29 July 2028 (Graph API changelog).
DEFAULT_VERSION = "v25.0"
# Meta refuses the whole request when an event_time is more than 7 days old.
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
# Graph error codes worth another attempt: 1 unknown, 2 service (temporary), 4 app,
# 17 user, 32 page, 613 custom, 80004 ad-account rate limits, 341 app limit, 368 temporarily
# blocked. 190/102 (token), 10/200-299/3 (permission) and 100 (invalid parameter) fail for
# good; other codes go by the HTTP status (429 and 5xx retried).
RETRY_CODES = frozenset({1, 2, 4, 17, 32, 341, 368, 613, 80004})
RATE_LIMIT_CODES = frozenset({4, 17, 32, 341, 613, 80004})
PERMANENT_CODES = frozenset({3, 10, 100, 102, 190})  # and 200-299 (permissions)
STANDARD_EVENTS = frozenset({
    "AddPaymentInfo", "AddToCart", "AddToWishlist", "CompleteRegistration", "Contact",
    "CustomizeProduct", "Donate", "FindLocation", "InitiateCheckout", "Lead", "PageView",
    "Purchase", "Schedule", "Search", "StartTrial", "SubmitApplication", "Subscribe",
    "ViewContent",
})  # fmt: skip


class MetaConversionsAPI(ConversionAPI):
    """Meta Conversions API: ``account_id`` is the pixel (dataset) ID, ``access_token`` a
    Conversions API token, ``url_template`` (optional) the page URL sent as
    ``event_source_url``. The event ID (deduplication with the browser pixel) is the
    transaction ID, see :func:`postbacks.transports.platform.event_id`."""

    kind = "meta_capi"
    label = "Meta Conversions API"  # a choice label: changing it needs a migration
    platform = "Meta"
    labels = {
        "account_id": "Pixel (dataset) ID",
        "url_template": "Page URL (optional)",
    }
    click_id_param = "fbclid"
    default_version = DEFAULT_VERSION
    event_names_default = {
        **COMMON_EVENT_NAMES,
        "trial": "StartTrial",
        "application": "SubmitApplication",
    }
    standard_events = STANDARD_EVENTS
    account_re = re.compile(r"[0-9]{5,25}")
    account_example = "the dataset ID, digits only, e.g. 1234567890123456"

    def url(self, rule: PostbackRule) -> str:
        pixel = (rule.account_id or "").strip()
        return f"{base_url('POSTBACKS_META_BASE_URL')}/{self.version(rule)}/{pixel}/events"

    def body(self, rule: PostbackRule, context: dict[str, str]) -> dict[str, Any]:
        """``{"data": [event], "test_event_code"?}``; values absent from ``context`` are
        left out. ``event_time`` already more than 7 days old when planned (a preview, a
        test of an old conversion) becomes the planning time, which Meta accepts."""
        now = int(time.time())
        when = event_time(context, now)
        if when < now - MAX_EVENT_AGE_SECONDS:
            when = now
        fbclid = click_id(context, self.click_id_param)
        country = context.get("country", "").strip().lower()
        user = {
            "fbc": self.fbc(fbclid, click_time(context, when)) if fbclid else "",
            "client_ip_address": text(context.get("ip", "")),
            "client_user_agent": text(context.get("user_agent", "")),
            "country": [hashlib.sha256(country.encode()).hexdigest()] if country else [],
        }
        custom = {
            "value": number(context.get("payout", "")),
            "currency": text(context.get("payout_currency", "")).upper(),
            "order_id": text(context.get("transaction.id", "")),
        }
        event = without_empty({
            "event_name": self.event_name(rule, context),
            "event_time": when,
            "event_id": event_id(context),
            "action_source": "website",
            "event_source_url": self.page_url(rule, context),
            "user_data": without_empty(user),
            "custom_data": without_empty(custom),
        })  # fmt: skip
        event.setdefault("user_data", {})  # required by Meta, even empty
        payload: dict[str, Any] = {"data": [event]}
        if rule.test_event_code:
            payload["test_event_code"] = text(rule.test_event_code.strip())
        return payload

    @staticmethod
    def fbc(fbclid: str, clicked_at: int) -> str:
        """``fb.1.<clicked_at in ms>.<fbclid>``; a value that already is an ``_fbc``
        cookie (``fb.1.1700000000000.IwAR...``) is kept as it is."""
        if re.match(r"fb\.\d\.\d+\.", fbclid):
            return fbclid
        return f"fb.1.{clicked_at * 1000}.{fbclid}"

    def authorize(self, request: PreparedRequest, secrets: Secrets) -> PreparedRequest:
        """The request plus the ``access_token`` query parameter (URL-encoded), and the
        signature headers when the rule signs. ValueError, so the attempt fails without
        being sent, when there is no token or an event is more than 7 days old (Meta
        would refuse the whole request)."""
        request = super().authorize(request, secrets)
        token = self.token(secrets)
        oldest = _oldest_event_time(request.body)
        if oldest is not None and oldest < time.time() - MAX_EVENT_AGE_SECONDS:
            days = (time.time() - oldest) / 86400
            raise ValueError(
                f"the event is {days:.1f} days old: Meta refuses events more than 7 days old."
            )
        separator = "&" if "?" in request.url else "?"
        url = f"{request.url}{separator}access_token={quote(token, safe='')}"
        return replace(request, url=url)

    def classify(
        self,
        response: requests.Response,
        body: str,
        duration_ms: int,
        request: PreparedRequest | None = None,
    ) -> Result:
        """Delivered: 2xx with ``events_received`` >= 1. A Graph error body (any status):
        :data:`RETRY_CODES` or ``is_transient`` retried (a rate limit waits at least what
        ``X-Business-Use-Case-Usage`` or ``Retry-After`` says), :data:`PERMANENT_CODES`
        and 200-299 failed for good, other codes by HTTP status. Without an error body,
        by HTTP status (429, 5xx retried); a 2xx without ``events_received`` is retried."""
        code = response.status_code
        result = Result(Outcome.FAILED, code, body, duration_ms=duration_ms)
        document = load_json(body)
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict):
            error_code = _integer(error.get("code"))
            if error_code in RETRY_CODES or error.get("is_transient") is True:
                retry = True
            elif error_code in PERMANENT_CODES or (
                isinstance(error_code, int) and 200 <= error_code <= 299
            ):
                retry = False
            else:  # a code not listed: as its HTTP status says
                retry = code == 429 or code >= 500
            result.outcome = Outcome.RETRY if retry else Outcome.FAILED
            result.error = _describe(error, code)
            if error_code in RATE_LIMIT_CODES or code == 429:
                result.retry_after = _wait_hint(response.headers)
            return result
        if 200 <= code < 300:
            received = document.get("events_received") if isinstance(document, dict) else None
            if (_integer(received) or 0) >= 1:
                result.outcome = Outcome.DELIVERED
            else:
                result.outcome = Outcome.RETRY
                result.error = f"HTTP {code} without events_received: {clip(body, 120)!r}"
            return result
        return super().classify(response, body, duration_ms)


def _integer(value: object) -> int | None:
    """``value`` when it is a JSON integer (not a boolean), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _oldest_event_time(body: str) -> int | None:
    document = load_json(body)
    events = document.get("data") if isinstance(document, dict) else None
    times = [e.get("event_time") for e in events or [] if isinstance(e, dict)]
    numbers = [t for t in times if isinstance(t, int | float) and not isinstance(t, bool)]
    return int(min(numbers)) if numbers else None


# What a Graph error means for the user, by code (a range for 200-299).
_MEANINGS = {
    190: "the access token is invalid or expired: generate a new one in Events Manager",
    102: "the access token is invalid or expired: generate a new one in Events Manager",
    10: "the token has no permission on this pixel",
    3: "the token has no permission on this pixel",
    100: "invalid parameter",
    4: "rate limited (app)",
    17: "rate limited (user)",
    32: "rate limited (page)",
    341: "application limit reached",
    613: "rate limited",
    80004: "rate limited (ad account)",
    368: "temporarily blocked for a policy violation",
    1: "temporary Meta error",
    2: "temporary Meta error",
}


def _describe(error: dict[str, Any], status: int) -> str:
    """``Meta error 190/463 (OAuthException): <meaning>: <message> [fbtrace_id X]``."""
    code, subcode = _integer(error.get("code")), error.get("error_subcode")
    meaning = _MEANINGS.get(code) if code is not None else None
    if meaning is None and code is not None and 200 <= code <= 299:
        meaning = _MEANINGS[10]
    head = f"Meta error {text(error.get('code'))}" + (f"/{text(subcode)}" if subcode else "")
    if error.get("type"):
        head += f" ({text(error['type'])})"
    detail = text(error.get("message") or f"HTTP {status}")
    user_text = " ".join(text(error.get(k, "")) for k in ("error_user_title", "error_user_msg"))
    if user_text.strip():
        detail += f" ({user_text.strip()})"
    message = f"{head}: {meaning}: {detail}" if meaning else f"{head}: {detail}"
    if error.get("fbtrace_id"):
        message += f" [fbtrace_id {text(error['fbtrace_id'])}]"
    return clip(message)


def _wait_hint(headers: Any) -> float | None:
    """Seconds to wait: ``Retry-After``, or the longest ``estimated_time_to_regain_access``
    (minutes) of ``X-Business-Use-Case-Usage``; None when neither says."""
    wait = parse_retry_after(headers.get("Retry-After"))
    usage = load_json(headers.get("X-Business-Use-Case-Usage") or "")
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (usage.values() if isinstance(usage, dict) else [])
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
    ]
    waits = [m for m in minutes if isinstance(m, int | float) and m > 0]
    if waits:
        wait = max(wait or 0.0, max(waits) * 60.0)
    return wait
