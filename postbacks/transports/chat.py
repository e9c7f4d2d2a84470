"""What the chat webhooks share (Slack incoming webhook, Discord webhook).

A rule of such a kind posts one message per event to a channel. Its webhook URL is the
credential (anyone holding it can post): it is kept in ``rule.access_token``, written and
never shown again, added at sending time only. The planned request (stored in the Delivery,
logged in each Attempt) carries the URL with its secret last path segment as ``***``, e.g.
``https://hooks.slack.com/services/T0001/B0001/***``; ``POSTBACKS_MASK_PATH_PATTERNS``
masks that segment in any other text as a second guard, and an error or answer quoting the
URL or its path has it replaced by ``***``.

``rule.body_template`` is the message: the template's own text is the platform's markup as
typed (Slack mrkdwn, Discord markdown); each macro's *value* is escaped so that a value
cannot add markup, links or mentions. Blank: the kind's default message. Each kind writes
its prefixes (which URLs are its webhooks), its body and ``classify`` (its answers).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ValidationError

from postbacks.choices import SuccessMode
from postbacks.transports.base import (
    NO_SECRETS,
    Outcome,
    PreparedRequest,
    Result,
    Secrets,
    parse_retry_after,
)
from postbacks.transports.http import IDEMPOTENCY_HEADER, HttpTransport
from tracker import macros

if TYPE_CHECKING:
    import requests

    from postbacks import http_async
    from postbacks.models import PostbackRule

SECRET_SLOT = "***"
# Control characters other than tab and newline are removed from a message.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class ChatWebhook(HttpTransport):
    """Base of the chat webhook kinds: ``rule.access_token`` is the webhook URL (a
    secret), ``rule.body_template`` the message with macros. Subclasses set the class
    attributes and write :meth:`payload` and :meth:`classify`."""

    fields = ("access_token", "clear_access_token", "body_template")
    signed = False
    labels = {
        "access_token": "Webhook URL",
        "body_template": "Message",
    }
    help = {
        "access_token": "The channel's webhook URL: it lets anyone post to the channel, so it "
        "is stored, never shown again (leave blank to keep the saved one).",
        "body_template": "The message in the platform's markup, macros allowed; each macro's "
        "value is escaped so it cannot add links or mentions. Blank: a default line (status, "
        "type, payout, campaign, offer, click ID).",
    }
    platform: ClassVar[str]  # "Slack", "Discord": in messages
    default_template: ClassVar[str]
    text_max: ClassVar[int]  # characters
    # What a webhook URL of this kind looks like after one of its prefixes (the setting
    # named by ``prefixes_setting``), e.g. "T…/B…/secret" for Slack.
    path_re: ClassVar[re.Pattern[str]]
    path_example: ClassVar[str]

    def prefixes(self) -> list[str]:
        """The URL prefixes of this kind's webhooks (a setting, e.g. for a local receiver)."""
        raise NotImplementedError

    def escape(self, value: str) -> str:
        """A macro's value made inert in the platform's markup."""
        raise NotImplementedError

    def payload(self, text: str) -> dict[str, object]:
        """The JSON body for the message ``text``."""
        raise NotImplementedError

    def wire_url(self, url: str) -> str:
        """The webhook URL as requested (a kind may add query parameters)."""
        return url

    # What a kind's answers mean (see :meth:`classify`).
    hints: ClassVar[dict[int, str]] = {}  # status -> what to do, after a refusal

    def posted(self, code: int, body: str) -> str:
        """ "" when a 2xx answer says the message was posted, else why not."""
        raise NotImplementedError

    def described(self, code: int, body: str) -> str:
        """The text of an error answer, for the log (at most 300 characters)."""
        return " ".join(body.split())[:300] or "no text"

    def wait_asked(self, response: requests.Response, body: str) -> float | None:
        """Seconds a 429 asks to wait (Retry-After by default)."""
        return parse_retry_after(response.headers.get("Retry-After"))

    def classify(
        self,
        response: requests.Response,
        body: str,
        duration_ms: int,
        request: PreparedRequest | None = None,
    ) -> Result:
        """The platform's answer: a 2xx :meth:`posted` is delivered, any other 2xx, a 429
        (after :meth:`wait_asked`), 408 and 5xx are retried, 3xx and other 4xx fail with the
        platform's text (:meth:`described`) and, for the statuses in :attr:`hints`, what to
        do. See each kind's module docstring for its table."""
        code = response.status_code
        if 300 <= code < 400:
            return super().classify(response, body, duration_ms)
        result = Result(
            Outcome.FAILED, status_code=code, response_body=body, duration_ms=duration_ms
        )
        if 200 <= code < 300:
            result.error = self.posted(code, body)
            result.outcome = Outcome.RETRY if result.error else Outcome.DELIVERED
            return result
        result.error = f"{self.platform} {code}: {self.described(code, body)}"
        if code == 429:
            result.outcome = Outcome.RETRY
            result.retry_after = self.wait_asked(response, body)
        elif code == 408 or code >= 500:
            result.outcome = Outcome.RETRY
        elif code in self.hints:
            result.error += f" ({self.hints[code]})"
        return result

    # --- validate ------------------------------------------------------------------------

    def webhook_error(self, url: str) -> str:
        """Why ``url`` is not a webhook URL of this kind ("" when it is)."""
        url = url.strip()
        prefixes = self.prefixes()
        prefix = next((p for p in prefixes if url.startswith(p)), None)
        if prefix is None:
            return (
                f"A {self.platform} webhook URL starts with {' or '.join(prefixes)} "
                f"(e.g. {prefixes[0]}{self.path_example})."
            )
        if not self.path_re.fullmatch(url[len(prefix) :]):
            return (
                f"This is not a whole {self.platform} webhook URL: after {prefix} it goes on "
                f"like {self.path_example}. Copy it again from {self.platform}."
            )
        return ""

    def validate(self, rule: PostbackRule, *, known_vars: set[str] | None = None) -> list[str]:
        """The webhook URL's shape and the message template's macros; warnings for fields
        this kind does not use. Raises ValidationError keyed by field."""
        errors: dict[str, list[str]] = {}
        warnings: list[str] = []
        url = (rule.access_token or "").strip()
        if not url:
            errors["access_token"] = [f"Enter the {self.platform} webhook URL."]
        elif problem := self.webhook_error(url):
            errors["access_token"] = [problem]
        template = rule.body_template or ""
        if template.strip():
            found, warned = macros.validate(template, context="none", known_vars=known_vars)
            if found:
                errors["body_template"] = found
            # A chat message needs no {externalid}: that warning is for traffic sources.
            warnings += [w for w in warned if "{externalid}" not in w]
            if len(template) > self.text_max:
                warnings.append(
                    f"The message is cut at {self.text_max} characters ({self.platform}'s limit)."
                )
        if (rule.url_template or "").strip():
            warnings.append(
                f"The postback URL is not used: a {self.platform} message goes to the webhook URL."
            )
        if (rule.headers_template or "").strip():
            warnings.append(f"The headers are not used by a {self.platform} message.")
        if (rule.success_mode or SuccessMode.STATUS) != SuccessMode.STATUS:
            warnings.append(
                f"'Success when' is not used: {self.platform}'s answer says whether the "
                "message was posted."
            )
        if errors:
            raise ValidationError(errors)
        return warnings

    # --- prepare -------------------------------------------------------------------------

    def message(self, template: str, context: dict[str, str]) -> str:
        """The message: ``template`` (blank: the default) with each macro's value escaped,
        control characters but tab and newline removed, surrounding blanks stripped, cut at
        :attr:`text_max` characters ("…" last). Never empty."""
        escaped = {key: self.escape(value) for key, value in context.items()}
        text = ""
        for candidate in (template, self.default_template):
            if candidate.strip():
                text = _CONTROL_RE.sub("", macros.render(candidate, escaped, escape="none"))
                text = text.strip()
            if text:
                break
        text = text or "—"
        return text if len(text) <= self.text_max else text[: self.text_max - 1] + "…"

    def prepare(self, rule: PostbackRule, context: dict[str, str]) -> PreparedRequest:
        """The POST for one event, to the webhook URL with its secret as ``***``."""
        body = self.payload(self.message(rule.body_template or "", context))
        headers = {"Content-Type": "application/json"}
        if context.get("delivery.id"):
            headers[IDEMPOTENCY_HEADER] = context["delivery.id"]
        return PreparedRequest(
            "POST",
            self.wire_url(masked_webhook(rule.access_token or "")),
            json.dumps(body, ensure_ascii=False),
            headers,
        )

    # --- send ----------------------------------------------------------------------------

    def authorize(self, request: PreparedRequest, secrets: Secrets) -> PreparedRequest:
        """The request sent to the rule's webhook URL (``secrets.access_token``);
        ValueError (the attempt fails for good, nothing is sent) without a usable one.
        The message never quotes the URL."""
        url = secrets.access_token.strip()
        if not url:
            raise ValueError(f"no webhook URL: enter the rule's {self.platform} webhook URL.")
        if problem := self.webhook_error(url):
            raise ValueError(f"the saved webhook URL is not usable. {problem}")
        return super().authorize(replace(request, url=self.wire_url(url)), secrets)

    def send(
        self, request: PreparedRequest, timeout: float, secrets: Secrets = NO_SECRETS
    ) -> Result:
        """:meth:`HttpTransport.send`, the webhook's secret path segment masked too."""
        return _scrub_path(super().send(request, timeout, secrets), secrets)

    async def send_async(
        self,
        client: http_async.Client,
        request: PreparedRequest,
        timeout: float,
        secrets: Secrets = NO_SECRETS,
    ) -> Result:
        """:meth:`HttpTransport.send_async`, the webhook's secret path segment masked too."""
        result = await super().send_async(client, request, timeout, secrets)
        return _scrub_path(result, secrets)


def masked_webhook(url: str) -> str:
    """``url`` with its last path segment (the webhook's secret) as ``***``."""
    parts = urlsplit(url.strip())
    head, _, _secret = parts.path.rpartition("/")
    return urlunsplit(parts._replace(path=f"{head}/{SECRET_SLOT}", query="", fragment=""))


def _scrub_path(result: Result, secrets: Secrets) -> Result:
    """``result`` with the webhook's secret segment replaced by ``***`` in the error and
    answer (a connection error quotes the path, not the whole URL)."""
    url = secrets.access_token.strip()
    secret = urlsplit(url).path.rpartition("/")[2]
    if len(secret) >= 8:
        result.error = result.error.replace(secret, SECRET_SLOT)
        result.response_body = result.response_body.replace(secret, SECRET_SLOT)
    return result
