"""What the ad platforms' conversion APIs share (Meta Conversions API, TikTok Events API).

A rule of such a kind names a pixel (``account_id``), an access token (``access_token``,
added at sending time: never in a planned request nor in the postback log), an optional
API version, test event code and event names, and optionally the page where the event
happened (``url_template``, a URL with macros). The request body is built from the macro
context of the event (``macros.build_context``), so retries and replays send exactly what
was planned. Each kind writes :meth:`ConversionAPI.url`, :meth:`ConversionAPI.body`,
``authorize`` (where its token goes) and ``classify`` (its error codes).

Where the click's values come from:

- the platform's click ID (``fbclid``, ``ttclid``): the external ID when the traffic
  source's external-ID parameter is that name (``{trafficsource.externalid_param}``; a
  context without that macro, as a hand-made one, takes the external ID as is), else the
  named parameter of that name (``{var:fbclid}``);
- the click's time (``{click.timestamp}``, Unix seconds), else the event's time.
"""

from __future__ import annotations

import json
import math
import re
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError

from postbacks.choices import MAX_DELAY_SECONDS, EventType
from postbacks.transports.base import PreparedRequest, Secrets
from postbacks.transports.http import IDEMPOTENCY_HEADER, HttpTransport
from tracker import macros

if TYPE_CHECKING:
    from postbacks.models import PostbackRule

# Macros of ``tracker.macros`` read here (see the module docstring).
EXTERNAL_ID_PARAM = "trafficsource.externalid_param"
CLICK_TIMESTAMP = "click.timestamp"
EVENT_NAME_MAX_CHARS = 50
VERSION_RE = re.compile(r"v\d+\.\d+")
TEST_CODE_RE = re.compile(r"[^\s]{1,100}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Conversion types (``ct``) every platform names alike; "*" is any other type.
COMMON_EVENT_NAMES = {
    **dict.fromkeys(
        ("sale", "purchase", "order", "upsell", "rebill", "deposit", "ftd", "*"), "Purchase"
    ),
    "lead": "Lead",
    **dict.fromkeys(("signup", "registration", "reg"), "CompleteRegistration"),
    **dict.fromkeys(("subscription", "subscribe"), "Subscribe"),
    "click": "ViewContent",
}


def text(value: object) -> str:
    """``value`` as text that can go on the wire (lone surrogates replaced by "?")."""
    string = "" if value is None else str(value)
    return string if string.isascii() else string.encode("utf-8", "replace").decode("utf-8")


def number(value: str) -> int | float | None:
    """A JSON number from a macro value ("2.35" -> 2.35, "10" -> 10); None when the value is
    empty, not a number, or not finite as a double (NaN, infinities, 1e999 are not JSON)."""
    try:
        parsed = Decimal(value.strip())
        as_float = float(parsed)
    except (InvalidOperation, AttributeError, ValueError):
        return None
    if not math.isfinite(as_float):  # NaN, infinities, and beyond a double (1e999)
        return None
    if abs(as_float) < 2**53 and parsed == parsed.to_integral_value():
        return int(parsed)
    return as_float


def unix_seconds(value: str) -> int | None:
    """A Unix time in seconds from a macro value ("1767323045"); None when unusable."""
    parsed = number(value)
    return int(parsed) if parsed is not None and parsed > 0 else None


def event_time(context: dict[str, str], now: float | None = None) -> int:
    """The event's Unix time in seconds: ``{timestamp}`` (the conversion's time, or its
    status change's), else ``now`` (the planning time)."""
    return unix_seconds(context.get("timestamp", "")) or int(now or time.time())


def event_id(context: dict[str, str]) -> str:
    """The event ID the platform deduplicates on (with the event name, within 48 hours):
    the transaction ID when the network sent one (the order ID a browser pixel on the
    advertiser's thank-you page also sends as its event ID), else ``conversion-<id>``, else
    ``click-<click id>``, else the delivery ID. The same on every attempt and replay, and
    the same for every rule and status change of one conversion: it is counted once."""
    for name, prefix in (("transaction.id", ""), ("conversion.id", "conversion-")):
        if context.get(name):
            return prefix + text(context[name])
    if context.get("click.id"):
        return "click-" + text(context["click.id"])
    return text(context.get("delivery.id", ""))


def click_id(context: dict[str, str], param: str) -> str:
    """The platform's click ID (``param``: fbclid, ttclid) recorded with the click: the
    external ID when the traffic source reads it from ``param`` (or, in a context without
    ``trafficsource.externalid_param``, in any case), else the named parameter ``param``
    (``{var:<param>}``); "" when neither has it."""
    source_param = context.get(EXTERNAL_ID_PARAM)
    external = context.get("externalid", "")
    if external and (source_param is None or source_param.lower() == param.lower()):
        return text(external)
    return text(context.get(macros.NAMED_VAR_PREFIX + param, ""))


def click_time(context: dict[str, str], fallback: int) -> int:
    """The click's Unix time in seconds (``{click.timestamp}``), else ``fallback``."""
    return unix_seconds(context.get(CLICK_TIMESTAMP, "")) or fallback


def json_body(payload: dict[str, Any]) -> str:
    """Compact JSON text; control characters (NUL included) escaped, non-ASCII kept."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def without_empty(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the entries that are None, "" or empty."""
    return {key: value for key, value in values.items() if value not in (None, "", [], {})}


def clip(message: str, length: int = 300) -> str:
    return message if len(message) <= length else message[: length - 1] + "…"


class ConversionAPI(HttpTransport):
    """Base of the ad-platform kinds: validation of the rule's platform fields, event-name
    mapping, the planned request (POST, JSON, no secret) and the access token kept out of
    every stored text. Subclasses set the class attributes and write :meth:`url`,
    :meth:`body` and :meth:`classify`."""

    platform: ClassVar[str]  # "Meta", for messages
    click_id_param: ClassVar[str]  # "fbclid"
    default_version: ClassVar[str]
    event_names_default: ClassVar[dict[str, str]]
    standard_events: ClassVar[frozenset[str]]
    account_re: ClassVar[re.Pattern[str]]
    account_example: ClassVar[str]  # "digits only, e.g. 123456789012345"
    fields = (
        "account_id", "access_token", "clear_access_token", "api_version", "test_event_code",
        "event_names", "url_template",
    )  # fmt: skip

    # --- validate ------------------------------------------------------------------------

    def validate(self, rule: PostbackRule, *, known_vars: set[str] | None = None) -> list[str]:
        """Checks the platform fields (``account_id``, ``access_token``, ``api_version``,
        ``test_event_code``, ``event_names``, the optional page URL ``url_template``);
        raises ValidationError keyed by those fields; returns warnings."""
        errors: dict[str, list[str]] = {}
        warnings: list[str] = []
        account = (rule.account_id or "").strip()
        if not account:
            errors["account_id"] = [f"Enter the {self.platform} pixel ({self.account_example})."]
        elif not self.account_re.fullmatch(account):
            errors["account_id"] = [f"Not a {self.platform} pixel: {self.account_example}."]
        token = rule.access_token or ""
        if not token.strip():
            errors["access_token"] = [f"Enter the {self.platform} access token."]
        elif CONTROL_RE.search(token.strip()) or re.search(r"\s", token.strip()):
            errors["access_token"] = [
                "The access token holds spaces or line breaks: paste it again, without them."
            ]
        version = rule.api_version or ""
        if version and not VERSION_RE.fullmatch(version):
            errors["api_version"] = [
                f"Write the version as {self.default_version}; blank uses {self.default_version}."
            ]
        code = rule.test_event_code or ""
        if code and not TEST_CODE_RE.fullmatch(code):
            errors["test_event_code"] = ["Paste the test event code without spaces."]
        elif code:
            warnings.append(
                f"Test event code set: {self.platform} shows the events in its Test Events "
                "tool only, not in your reports. Clear it once the integration works."
            )
        errors["event_names"] = self._event_name_errors(rule.event_names, warnings)
        page = rule.url_template or ""
        if page:
            errors["url_template"] = (
                self._url_errors(page)
                or macros.validate(page, context="url", known_vars=known_vars)[0]
            )
        if rule.event_type == EventType.IMPRESSION:
            warnings.append(
                f"An impression is not an action on a website: {self.platform} receives it "
                f'as "{self.event_name(rule, {"event.type": "impression"})}".'
            )
        statuses = set(rule.statuses or [])
        if rule.event_type != EventType.CLICK and (
            not statuses or statuses & {"rejected", "refunded"}
        ):
            warnings.append(
                f"{self.platform} counts every event sent as a conversion: choose the statuses "
                "approved (and pending), not rejected or refunded."
            )
        if (rule.delay_seconds or 0) > MAX_DELAY_SECONDS - 86400:
            warnings.append(
                f"{self.platform} refuses events more than 7 days old: with this delay, the "
                "retries after the 7th day fail."
            )
        errors = {name: messages for name, messages in errors.items() if messages}
        if errors:
            raise ValidationError(errors)
        return warnings

    def validate_template(self, template: str) -> None:
        """The optional page URL: blank, or an http(s) URL with known macros."""
        if template:
            errors = self._url_errors(template) or macros.validate(template, context="url")[0]
            if errors:
                raise ValidationError(errors)

    def _event_name_errors(self, names: object, warnings: list[str]) -> list[str]:
        if names in (None, "", {}):
            return []
        if not isinstance(names, dict):
            example = '{"sale": "Purchase", "*": "Lead"}'
            return [f"Give a JSON object of conversion type -> event name, e.g. {example}."]
        errors = []
        for key, name in names.items():
            if not isinstance(key, str) or not key.strip():
                errors.append("Each key is a conversion type (e.g. sale) or * for any other.")
            elif not isinstance(name, str) or not name.strip():
                errors.append(f"{key}: give the event name as text, e.g. Purchase.")
            elif len(name) > EVENT_NAME_MAX_CHARS or CONTROL_RE.search(name):
                errors.append(
                    f"{key}: an event name is at most {EVENT_NAME_MAX_CHARS} characters, "
                    "without line breaks."
                )
            elif name not in self.standard_events:
                warnings.append(
                    f"{key}: {name} is not a {self.platform} standard event; it is reported "
                    "as a custom event, which ads cannot optimise for."
                )
        return errors

    # --- prepare -------------------------------------------------------------------------

    def event_name(self, rule: PostbackRule, context: dict[str, str]) -> str:
        """The event name for the event's conversion type (or event type for a click):
        the rule's ``event_names`` (exact type, lower-cased type, then "*"), else the
        platform's default for the type, else its default for "*"."""
        key = context.get("conversion.type") or context.get("event.type") or ""
        names = rule.event_names if isinstance(rule.event_names, dict) else {}
        defaults = self.event_names_default
        candidates = (names.get(key), names.get(key.lower()), names.get("*"))
        for candidate in (*candidates, defaults.get(key.lower())):
            if isinstance(candidate, str) and candidate.strip():
                return text(candidate.strip())
        return defaults["*"]

    def page_url(self, rule: PostbackRule, context: dict[str, str]) -> str:
        """The page where the event happened: ``rule.url_template`` rendered (values
        URL-encoded); "" when blank or not an http(s) URL once rendered."""
        if not rule.url_template:
            return ""
        url = macros.render(rule.url_template, context, escape="url").strip()
        return url if re.match(r"https?://", url, re.IGNORECASE) else ""

    def version(self, rule: PostbackRule) -> str:
        return rule.api_version or self.default_version

    def url(self, rule: PostbackRule) -> str:
        """The platform endpoint for ``rule`` (no secret in it)."""
        raise NotImplementedError

    def body(self, rule: PostbackRule, context: dict[str, str]) -> dict[str, Any]:
        """The JSON document to send for one event."""
        raise NotImplementedError

    def prepare(self, rule: PostbackRule, context: dict[str, str]) -> PreparedRequest:
        """POST to :meth:`url` with the JSON :meth:`body`; ``Idempotency-Key`` carries
        ``context["delivery.id"]``. No secret; never raises for any context."""
        headers = {"Content-Type": "application/json"}
        if context.get("delivery.id"):
            headers[IDEMPOTENCY_HEADER] = context["delivery.id"]
        return PreparedRequest("POST", self.url(rule), json_body(self.body(rule, context)), headers)

    # --- send ----------------------------------------------------------------------------

    @staticmethod
    def token(secrets: Secrets) -> str:
        """The access token to send; ValueError (the attempt fails unsent) when there is
        none or it holds control characters (it would break the request)."""
        token = secrets.access_token.strip()
        if not token:
            raise ValueError("no access token: enter it in the rule.")
        if CONTROL_RE.search(token):
            raise ValueError("the access token holds control characters: enter it again.")
        return token


def base_url(setting: str) -> str:
    """``settings.<setting>`` without a trailing slash."""
    return str(getattr(settings, setting)).rstrip("/")


def load_json(body: str) -> Any:
    """``body`` parsed as JSON; None when it is not JSON (HTML from a proxy, a cut body)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None
