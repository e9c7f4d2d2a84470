"""Telegram message: a bot posts one plain-text line per event to a chat or channel.

The request (Bot API, https://core.telegram.org/bots/api#sendmessage and
https://core.telegram.org/bots/api#making-requests)::

    POST <POSTBACKS_TELEGRAM_BASE_URL>/bot<token>/sendMessage
    Content-Type: application/json
    Idempotency-Key: <delivery ID>            (ignored by Telegram, kept for the log)

    {"chat_id": -1001234567890 or "@channelusername",
     "text": "<the rendered template, at most 4096 characters>",
     "link_preview_options": {"is_disabled": true}}

- ``rule.access_token`` is the bot token from @BotFather (``123456789:AA...``). It is a
  secret: the planned URL (stored in the Delivery, logged in each Attempt) says
  ``/bot***/sendMessage`` and :meth:`TelegramMessage.authorize` puts the token in only
  on the wire; ``postbacks.masking`` also masks ``/bot<digits>:<token>`` as a second guard.
- ``rule.account_id`` is the chat ID: a number (``-100...`` for supergroups and channels)
  or ``@channelusername`` of a public channel. The bot must be a member (an admin of a
  channel), or the user must have started it.
- ``rule.body_template`` is the message, macros filled in **as plain text**: no
  ``parse_mode`` is sent, so ``<``, ``*`` or ``_`` in a value show as typed and cannot
  break the message; control characters other than tab and newline are removed; the text
  is cut at 4096 characters (counted in UTF-16 code units, as Telegram counts), ending in
  "…". Blank: :data:`DEFAULT_TEMPLATE`.
  ``link_preview_options`` replaced ``disable_web_page_preview`` in Bot API 7.0.

Answers (https://core.telegram.org/bots/api#responseparameters): ``{"ok": true, "result":
Message}``, or ``{"ok": false, "error_code", "description", "parameters": {"retry_after",
"migrate_to_chat_id"}}`` with the HTTP status equal to ``error_code``:

====================================  =========  ===============================================
answer                                outcome    error logged
====================================  =========  ===============================================
2xx with ``"ok": true``               delivered
2xx without ``"ok": true``            retry      Telegram answered 200 without "ok": true
429 (flood control)                   retry      after ``parameters.retry_after`` s (or Retry-After)
5xx, 408                              retry      Telegram 502: <description>
400 with ``migrate_to_chat_id``       failed     ... the group is now the supergroup <id>
400 chat not found, 401, 403, 404     failed     Telegram 403: Forbidden: bot was blocked ... + hint
other 4xx, 3xx                        failed     Telegram <code>: <description>
no token / malformed token            failed     Not sent: ... (nothing goes out)
====================================  =========  ===============================================
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError

from postbacks.choices import SuccessMode
from postbacks.transports.base import (
    Outcome,
    PreparedRequest,
    Result,
    Secrets,
    json_object,
    parse_retry_after,
    retry_seconds,
)
from postbacks.transports.http import IDEMPOTENCY_HEADER, HttpTransport
from tracker import macros

if TYPE_CHECKING:
    import requests

    from postbacks.models import PostbackRule

# The status as a sign, then what converted where; every value as plain text.
DEFAULT_TEMPLATE = (
    "{status:approved=✅,pending=⏳,rejected=❌,refunded=↩️} {conversion.type|conversion} "
    "{payout} {payout_currency} — {campaign.name} / {offer.name}, click {click.id}"
)
TEXT_MAX = 4096  # sendMessage: "1-4096 characters after entities parsing"
TOKEN_SLOT = "/bot***/"  # where the planned URL holds the token (masked form)
# @BotFather tokens: the bot's numeric ID, a colon, then 35 URL-safe characters.
TOKEN_RE = re.compile(r"\d+:[A-Za-z0-9_-]+")
TOKEN_FORMAT_RE = re.compile(r"\d{3,20}:[A-Za-z0-9_-]{30,64}")
CHAT_ID_RE = re.compile(r"-?\d{1,20}")
# Public usernames: 5-32 characters, letters, digits and underscores, a letter first.
CHANNEL_RE = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
HINTS = {
    401: "check the bot token (from @BotFather)",
    403: "the bot cannot post there: unblock it, add it back to the chat, or make it an "
    "admin of the channel",
    404: "check the bot token (from @BotFather)",
}
CHAT_NOT_FOUND_HINT = (
    "check the chat ID, and that the bot was added to the chat (or the user started it)"
)


class TelegramMessage(HttpTransport):
    """A message from a bot to a Telegram chat: ``rule.access_token`` is the bot token,
    ``rule.account_id`` the chat ID, ``rule.body_template`` the text (plain, macros filled
    in). See the module docstring for the request and how answers are classified."""

    kind = "telegram"
    label = "Telegram message"  # a choice label: changing it needs a migration
    fields = ("account_id", "access_token", "clear_access_token", "body_template")
    labels = {
        "account_id": "Chat ID",
        "access_token": "Bot token",
        "body_template": "Message",
    }
    help = {
        "body_template": "The message as plain text (no formatting), macros allowed. Blank: "
        "a default line (status, type, payout, campaign, offer, click ID).",
    }

    # --- validate ------------------------------------------------------------------------

    def validate(self, rule: PostbackRule, *, known_vars: set[str] | None = None) -> list[str]:
        """Token format, chat ID format and the message template's macros; warnings for
        fields a Telegram message does not use. Raises ValidationError keyed by field."""
        errors: dict[str, list[str]] = {}
        warnings: list[str] = []
        token = (rule.access_token or "").strip()
        if not token:
            errors["access_token"] = ["Enter the bot token from @BotFather."]
        elif not TOKEN_FORMAT_RE.fullmatch(token):
            errors["access_token"] = [
                "A bot token from @BotFather looks like 123456789:AAH…: the bot's number, "
                "a colon, then about 35 letters, digits, - or _."
            ]
        chat = (rule.account_id or "").strip()
        if not chat:
            errors["account_id"] = ["Enter the chat ID, e.g. -1001234567890 or @channelname."]
        elif not (CHAT_ID_RE.fullmatch(chat) or CHANNEL_RE.fullmatch(chat)):
            errors["account_id"] = [
                "A chat ID is a number (e.g. -1001234567890 for a group or channel) or a "
                "public channel's @username (5-32 letters, digits or _)."
            ]
        template = rule.body_template or ""
        if template.strip():
            found, warned = macros.validate(template, context="none", known_vars=known_vars)
            if found:
                errors["body_template"] = found
            # A chat message needs no {externalid}: that warning is for traffic sources.
            warnings += [w for w in warned if "{externalid}" not in w]
            if len(template) > TEXT_MAX:
                warnings.append(f"The message is cut at {TEXT_MAX} characters (Telegram's limit).")
        if (rule.url_template or "").strip():
            warnings.append(
                "The postback URL is not used: a Telegram message goes to the Bot API "
                "(POSTBACKS_TELEGRAM_BASE_URL)."
            )
        if (rule.headers_template or "").strip():
            warnings.append("The headers are not used by a Telegram message.")
        if (rule.success_mode or SuccessMode.STATUS) != SuccessMode.STATUS:
            warnings.append(
                "'Success when' is not used: a message counts as sent when Telegram "
                'answers "ok": true.'
            )
        if errors:
            raise ValidationError(errors)
        return warnings

    # --- prepare -------------------------------------------------------------------------

    def prepare(self, rule: PostbackRule, context: dict[str, str]) -> PreparedRequest:
        """The sendMessage request for one event, without the token (see :meth:`authorize`)."""
        text = message_text(rule.body_template or "", context)
        body = {
            "chat_id": chat_id_value(rule.account_id or ""),
            "text": text,
            "link_preview_options": {"is_disabled": True},
        }
        headers = {"Content-Type": "application/json"}
        if context.get("delivery.id"):
            headers[IDEMPOTENCY_HEADER] = context["delivery.id"]
        base = settings.POSTBACKS_TELEGRAM_BASE_URL.rstrip("/")
        return PreparedRequest(
            "POST",
            f"{base}{TOKEN_SLOT}sendMessage",
            json.dumps(body, ensure_ascii=False),
            headers,
        )

    # --- send ----------------------------------------------------------------------------

    def authorize(self, request: PreparedRequest, secrets: Secrets) -> PreparedRequest:
        """The request with the bot token in its path; ValueError (the attempt fails for
        good, nothing is sent) when there is no token or it is not ``<digits>:<chars>``.
        The message never quotes the token."""
        token = secrets.access_token.strip()
        if not token:
            raise ValueError("no bot token: enter the rule's bot token from @BotFather.")
        if not TOKEN_RE.fullmatch(token):
            raise ValueError(
                "the bot token is not <digits>:<letters, digits, - or _>; enter it again."
            )
        if TOKEN_SLOT not in request.url:
            raise ValueError(f"the planned URL has no {TOKEN_SLOT} for the bot token.")
        url = request.url.replace(TOKEN_SLOT, f"/bot{token}/", 1)
        return super().authorize(replace(request, url=url), secrets)

    def classify(
        self,
        response: requests.Response,
        body: str,
        duration_ms: int,
        request: PreparedRequest | None = None,
    ) -> Result:
        """Telegram's answer as delivered, retry or failed: see the module docstring's
        table. A body that is not Telegram's JSON is classified as any HTTP answer."""
        answer = json_object(body)
        if answer is None or "ok" not in answer:
            if 200 <= response.status_code < 300:
                return Result(
                    Outcome.RETRY,
                    status_code=response.status_code,
                    response_body=body,
                    error=f'Telegram answered {response.status_code} without "ok": true',
                    duration_ms=duration_ms,
                )
            return super().classify(response, body, duration_ms)
        code = response.status_code
        result = Result(
            Outcome.FAILED, status_code=code, response_body=body, duration_ms=duration_ms
        )
        if 200 <= code < 300 and answer.get("ok") is True:
            result.outcome = Outcome.DELIVERED
            return result
        parameters = answer.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        description = str(answer.get("description") or f"HTTP {code}")[:300]
        result.error = f"Telegram {code}: {description}"
        if code == 429 or answer.get("error_code") == 429:
            result.outcome = Outcome.RETRY
            result.retry_after = retry_seconds(parameters.get("retry_after"))
            if result.retry_after is None:
                result.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        elif 200 <= code < 300:
            result.outcome = Outcome.RETRY
            result.error = f'Telegram answered {code} without "ok": true: {description}'
        elif code == 408 or code >= 500:
            result.outcome = Outcome.RETRY
        elif "migrate_to_chat_id" in parameters:
            new_id = parameters["migrate_to_chat_id"]
            result.error += f" (the group is now the supergroup {new_id}: set the chat ID to it)"
        elif code in HINTS:
            result.error += f" ({HINTS[code]})"
        elif "chat not found" in description.lower():
            result.error += f" ({CHAT_NOT_FOUND_HINT})"
        return result


def message_text(template: str, context: dict[str, str]) -> str:
    """The message: ``template`` (blank: :data:`DEFAULT_TEMPLATE`) rendered as plain text,
    control characters but tab and newline removed, surrounding blanks stripped, cut at
    :data:`TEXT_MAX` UTF-16 code units ("…" last). Never empty: a template that renders to
    nothing gives the default message."""
    text = ""
    for candidate in (template, DEFAULT_TEMPLATE):
        if candidate.strip():
            text = _CONTROL_RE.sub("", macros.render(candidate, context, escape="none")).strip()
        if text:
            break
    return _cap(text or "—", TEXT_MAX)


def chat_id_value(chat: str) -> int | str:
    """The ``chat_id`` JSON value: an integer for a numeric ID, else the text as given."""
    chat = chat.strip()
    return int(chat) if CHAT_ID_RE.fullmatch(chat) else chat


def _cap(text: str, limit: int) -> str:
    """``text`` within ``limit`` UTF-16 code units, never splitting a surrogate pair."""
    if len(text.encode("utf-16-le", "surrogatepass")) // 2 <= limit:
        return text
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit - 1:
            return text[:index] + "…"
    return text  # pragma: no cover - the length check above returned already
