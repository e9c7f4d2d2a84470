"""Discord message: a channel webhook posts one message per event.

The request (https://discord.com/developers/docs/resources/webhook#execute-webhook)::

    POST https://discord.com/api/webhooks/<id>/<secret>?wait=true
    Content-Type: application/json
    Idempotency-Key: <delivery ID>            (ignored by Discord, kept for the log)

    {"content": "<message>", "allowed_mentions": {"parse": []}}

- ``rule.access_token`` is the webhook URL (a secret: see :mod:`postbacks.transports.chat`);
  ``POSTBACKS_DISCORD_WEBHOOK_PREFIXES`` says which URLs are Discord's.
- ``rule.body_template`` is the message in Discord's markdown (``**bold**``, as typed);
  macro values have markdown characters escaped with a backslash, and
  ``allowed_mentions`` is empty, so no value (nor the template) pings ``@everyone``, a role
  or a user. Cut at 2000 characters (``content``'s limit).
- ``wait=true`` makes Discord answer with the posted message (its ``id``), so a 2xx
  without one is not taken for a posted message.

Answers (https://discord.com/developers/docs/topics/opcodes-and-status-codes#http):

=================================  =========  ================================================
answer                             outcome    error logged
=================================  =========  ================================================
2xx with the message's ``id``,     delivered
204
2xx anything else                  retry      Discord answered 200 without the message
429                                retry      after the body's ``retry_after`` (or Retry-After)
5xx, 408                           retry      Discord 502: <message>
404 (Unknown Webhook), 401, 403    failed     Discord 404: Unknown Webhook + what to do
other 4xx                          failed     Discord 400: <message> (e.g. content too long)
=================================  =========  ================================================
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from django.conf import settings

from postbacks.transports.base import (
    json_object,
    retry_seconds,
)
from postbacks.transports.chat import ChatWebhook

if TYPE_CHECKING:
    import requests

HINTS = {
    401: "the webhook's token was reset: copy the webhook URL again",
    403: "the webhook may not post in this channel: check its permissions",
    404: "the webhook was deleted: create a new one and enter its URL",
}
# Characters Discord's markdown gives a meaning to; a backslash before one shows it as is.
_MARKDOWN_RE = re.compile(r"([\\*_~`|<>#\[\]()@-])")


class DiscordMessage(ChatWebhook):
    """A message to a Discord channel through a webhook: ``rule.access_token`` is the
    webhook URL, ``rule.body_template`` the markdown text. See the module docstring for
    the request and how answers are classified."""

    kind = "discord"
    label = "Discord message"  # a choice label: changing it needs a migration
    platform = "Discord"
    default_template = (
        "{status:approved=✅,pending=⏳,rejected=❌,refunded=↩️} **{conversion.type|conversion}** "
        "{payout} {payout_currency} — {campaign.name} / {offer.name}, click {click.id}"
    )
    text_max = 2000
    hints = HINTS
    path_re = re.compile(r"\d{5,25}/[A-Za-z0-9_-]{20,100}")
    path_example = "123456789012345678/abcdefghijklmnopqrstuvwxyz0123456789"

    def prefixes(self) -> list[str]:
        return list(settings.POSTBACKS_DISCORD_WEBHOOK_PREFIXES)

    def escape(self, value: str) -> str:
        return _MARKDOWN_RE.sub(r"\\\1", value)

    def payload(self, text: str) -> dict[str, object]:
        return {"content": text, "allowed_mentions": {"parse": []}}

    def wire_url(self, url: str) -> str:
        return f"{url}?wait=true"

    def posted(self, code: int, body: str) -> str:
        answer = json_object(body)
        if code == 204 or (answer is not None and answer.get("id")):
            return ""
        return f"Discord answered {code} without the posted message"

    def described(self, code: int, body: str) -> str:
        message = (json_object(body) or {}).get("message")
        return str(message or " ".join(body.split()) or f"HTTP {code}")[:300]

    def wait_asked(self, response: requests.Response, body: str) -> float | None:
        """The body's ``retry_after`` (seconds, may be fractional), else Retry-After."""
        wait = retry_seconds((json_object(body) or {}).get("retry_after"))
        return wait if wait is not None else super().wait_asked(response, body)
