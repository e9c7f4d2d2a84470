"""TikTok Events API 2.0: one web event per delivery.

Request (documented at https://business-api.tiktok.com/portal/docs?id=1771100865818625,
"Report Web events" of Events API 2.0; standard events at
https://ads.tiktok.com/help/article/supported-standard-events)::

    POST {POSTBACKS_TIKTOK_BASE_URL}/open_api/{version}/event/track/
    Access-Token: <token>
    Content-Type: application/json
    Idempotency-Key: <delivery id>

    {"event_source": "web", "event_source_id": "<pixel code>",
     "test_event_code": "TEST123",
     "data": [{"event": "Purchase", "event_time": 1767323045, "event_id": "<txid>",
               "user": {"ttclid": "E.C.P.abc", "ip": "203.0.113.7",
                        "user_agent": "Mozilla/5.0 ..."},
               "properties": {"value": 2.35, "currency": "USD"},
               "page": {"url": "<rule URL, when set>"}}]}

The ``Access-Token`` header is added at sending time (:meth:`TikTokEventsAPI.authorize`),
never planned nor logged.

Answers: TikTok says HTTP 200 with ``{"code": 0, "message": "OK", "request_id": ...}`` on
success and a non-zero ``code`` on error (return codes of the Marketing API,
https://business-api.tiktok.com/portal/docs?id=1737172488964097): the rate limits
(:data:`RATE_LIMIT_CODES`) and server-side codes (5xxxx, 60001 maintenance) are retried,
any other code (40001 permission, 40002 parameters, 40105 token...) fails for good.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from postbacks.transports.base import (
    Outcome,
    PreparedRequest,
    Result,
    Secrets,
    parse_retry_after,
)
from postbacks.transports.platform import (
    COMMON_EVENT_NAMES,
    ConversionAPI,
    base_url,
    click_id,
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

DEFAULT_VERSION = "v1.3"
# "Requests made too frequently" (per app, per advertiser, per field value).
RATE_LIMIT_CODES = frozenset({40016, 40100, 40101, 40102})
# Codes that say what to fix; any other non-zero code fails as well, with TikTok's message.
_MEANINGS = {
    40001: "no permission on this pixel",
    40002: "invalid parameter",
    40104: "the access token is missing",
    40105: "the access token is invalid or revoked: generate a new one in Events Manager",
    40100: "rate limited",
    40016: "rate limited",
    40101: "rate limited",
    40102: "rate limited",
    50000: "temporary TikTok error",
    51001: "temporary TikTok error (timeout)",
    60001: "TikTok is in maintenance",
}
# Supported standard events (September 2025), and the names they replaced, still accepted.
STANDARD_EVENTS = frozenset({
    "AddPaymentInfo", "AddToCart", "AddToWishlist", "ApplicationApproval",
    "CompleteRegistration", "Contact", "CustomizeProduct", "Download", "FindLocation",
    "InitiateCheckout", "Lead", "Purchase", "Schedule", "Search", "StartTrial",
    "SubmitApplication", "Subscribe", "ViewContent",
    "ClickButton", "CompletePayment", "PlaceAnOrder", "SubmitForm",
})  # fmt: skip


def is_retried(code: int) -> bool:
    """Whether a non-zero TikTok return code is worth another attempt: a rate limit, a
    server-side error (5xxxx) or maintenance (6xxxx)."""
    return code in RATE_LIMIT_CODES or 50000 <= code <= 69999


class TikTokEventsAPI(ConversionAPI):
    """TikTok Events API: ``account_id`` is the pixel code, ``access_token`` an Events API
    token, ``url_template`` (optional) the page URL sent as ``page.url``. The event ID
    (deduplication with the browser pixel) is the transaction ID, see
    :func:`postbacks.transports.platform.event_id`."""

    kind = "tiktok"
    label = "TikTok Events API"  # a choice label: changing it needs a migration
    platform = "TikTok"
    labels = {
        "account_id": "Pixel code",
        "url_template": "Page URL (optional)",
    }
    click_id_param = "ttclid"
    default_version = DEFAULT_VERSION
    event_names_default = COMMON_EVENT_NAMES
    standard_events = STANDARD_EVENTS
    account_re = re.compile(r"[A-Za-z0-9]{8,64}")
    account_example = "the pixel code, letters and digits, e.g. CQ1ABCDE2FGH3IJK4LM0"

    def url(self, rule: PostbackRule) -> str:
        root = base_url("POSTBACKS_TIKTOK_BASE_URL")
        return f"{root}/open_api/{self.version(rule)}/event/track/"

    def body(self, rule: PostbackRule, context: dict[str, str]) -> dict[str, Any]:
        """The Events API 2.0 document for one web event; values absent from ``context``
        are left out."""
        user = {
            "ttclid": click_id(context, self.click_id_param),
            "ip": text(context.get("ip", "")),
            "user_agent": text(context.get("user_agent", "")),
        }
        properties = {
            "value": number(context.get("payout", "")),
            "currency": text(context.get("payout_currency", "")).upper(),
        }
        event = without_empty({
            "event": self.event_name(rule, context),
            "event_time": event_time(context),
            "event_id": event_id(context),
            "user": without_empty(user),
            "properties": without_empty(properties),
            "page": without_empty({"url": self.page_url(rule, context)}),
        })  # fmt: skip
        payload: dict[str, Any] = {
            "event_source": "web",
            "event_source_id": text((rule.account_id or "").strip()),
        }
        if rule.test_event_code:
            payload["test_event_code"] = text(rule.test_event_code.strip())
        payload["data"] = [event]
        return payload

    def authorize(self, request: PreparedRequest, secrets: Secrets) -> PreparedRequest:
        """The request plus the ``Access-Token`` header (and the signature headers when the
        rule signs); ValueError, so the attempt fails unsent, without a usable token."""
        request = super().authorize(request, secrets)
        return replace(request, headers={**request.headers, "Access-Token": self.token(secrets)})

    def classify(
        self,
        response: requests.Response,
        body: str,
        duration_ms: int,
        request: PreparedRequest | None = None,
    ) -> Result:
        """Delivered: 2xx with ``code`` 0. A non-zero ``code`` (any HTTP status): retried
        when :func:`is_retried`, else failed for good. Without a ``code``: by HTTP status
        (429, 5xx retried, other 4xx failed); a 2xx without one is retried."""
        status = response.status_code
        document = load_json(body)
        code = document.get("code") if isinstance(document, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            if 200 <= status < 300:
                error = f"HTTP {status} without a TikTok code: {clip(body, 120)!r}"
                return Result(Outcome.RETRY, status, body, error, duration_ms)
            return super().classify(response, body, duration_ms)
        if code == 0 and 200 <= status < 300:
            return Result(Outcome.DELIVERED, status, body, duration_ms=duration_ms)
        if code == 0:  # "OK" with an error status: the status decides
            return super().classify(response, body, duration_ms)
        meaning = _MEANINGS.get(code)
        message = text(document.get("message") or "")
        error = f"TikTok error {code}: " + (f"{meaning}: {message}" if meaning else message)
        if document.get("request_id"):
            error += f" [request_id {text(document['request_id'])}]"
        if not is_retried(code):
            return Result(Outcome.FAILED, status, body, clip(error), duration_ms)
        wait = parse_retry_after(response.headers.get("Retry-After"))
        return Result(Outcome.RETRY, status, body, clip(error), duration_ms, retry_after=wait)
