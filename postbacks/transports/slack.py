"""Slack message: an incoming webhook posts one message per event to its channel.

The request (https://api.slack.com/messaging/webhooks)::

    POST https://hooks.slack.com/services/T…/B…/<secret>
    Content-Type: application/json
    Idempotency-Key: <delivery ID>            (ignored by Slack, kept for the log)

    {"text": "<message>",
     "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "<message>"}}]}

- ``rule.access_token`` is the webhook URL (a secret: see :mod:`postbacks.transports.chat`);
  ``POSTBACKS_SLACK_WEBHOOK_PREFIXES`` says which URLs are Slack's.
- ``rule.body_template`` is the message in Slack's mrkdwn (``*bold*``, ``<url|text>``, as
  typed); macro values have ``&``, ``<`` and ``>`` escaped as Slack asks
  (https://api.slack.com/reference/surfaces/formatting#escaping), so a value cannot add a
  link or an ``<!channel>`` mention. Cut at 3000 characters (a section block's limit).
  ``text`` is the notification's fallback, the block what the channel shows.

Answers (https://api.slack.com/messaging/webhooks#handling_errors): ``200 ok`` (plain
text) when posted; else an error code as text:

=================================  =========  ================================================
answer                             outcome    error logged
=================================  =========  ================================================
2xx ``ok``                         delivered
2xx anything else                  retry      Slack answered 200 without "ok"
429                                retry      after Retry-After
5xx, 408                           retry      Slack 503: <text>
404 ``no_service``, 410, 403       failed     Slack 404: no_service + what to do
other 4xx (``invalid_payload``)    failed     Slack 400: invalid_payload
=================================  =========  ================================================
"""

from __future__ import annotations

import re

from django.conf import settings

from postbacks.transports.chat import ChatWebhook

HINTS = {
    403: "the webhook's app lost its access: add the app to the channel again",
    404: "the webhook was removed, or its channel deleted: create a new webhook",
    410: "the channel is archived: unarchive it or create a webhook for another channel",
}
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


class SlackMessage(ChatWebhook):
    """A message to a Slack channel through an incoming webhook: ``rule.access_token`` is
    the webhook URL, ``rule.body_template`` the mrkdwn text. See the module docstring for
    the request and how answers are classified."""

    kind = "slack"
    label = "Slack message"  # a choice label: changing it needs a migration
    platform = "Slack"
    default_template = (
        "{status:approved=:white_check_mark:,pending=:hourglass:,rejected=:x:,"
        "refunded=:leftwards_arrow_with_hook:} *{conversion.type|conversion}* {payout} "
        "{payout_currency} — {campaign.name} / {offer.name}, click {click.id}"
    )
    text_max = 3000
    hints = HINTS
    path_re = re.compile(r"T[A-Z0-9]{2,20}/B[A-Z0-9]{2,20}/[A-Za-z0-9]{8,64}")
    path_example = "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"

    def prefixes(self) -> list[str]:
        return list(settings.POSTBACKS_SLACK_WEBHOOK_PREFIXES)

    def escape(self, value: str) -> str:
        return "".join(_ESCAPES.get(char, char) for char in value)

    def payload(self, text: str) -> dict[str, object]:
        return {
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        }

    def posted(self, code: int, body: str) -> str:
        answer = " ".join(body.split())[:300]
        return (
            "" if answer == "ok" else f'Slack answered {code} without "ok": {answer or "(empty)"}'
        )
