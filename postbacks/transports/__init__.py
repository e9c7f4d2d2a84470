"""Destination kinds: one transport class per kind, behind a tiny shared interface.

A transport checks a rule's templates before it is saved (:meth:`Transport.validate`),
renders them into a request when the event is written (:meth:`Transport.prepare`) and sends
a planned request later (:meth:`Transport.send`), adding what is never stored in a planned
request (signatures, access tokens: :class:`Secrets`), and answers with a :class:`Result`.
Adding a kind means one module with one class and one ``REGISTRY`` line.
"""

from __future__ import annotations

from postbacks.transports.base import (
    NO_SECRETS,
    Outcome,
    PreparedRequest,
    Result,
    Secrets,
    Transport,
    parse_headers,
    parse_retry_after,
)
from postbacks.transports.discord import DiscordMessage
from postbacks.transports.http import (
    CONTENT_TYPES,
    FORBIDDEN_HEADERS,
    IDEMPOTENCY_HEADER,
    SUCCESS_REGEX_MAX_CHARS,
    HttpTransport,
    success_error,
    success_regex,
)
from postbacks.transports.meta import MetaConversionsAPI
from postbacks.transports.s2s import S2SPostback
from postbacks.transports.slack import SlackMessage
from postbacks.transports.telegram import TelegramMessage
from postbacks.transports.tiktok import TikTokEventsAPI
from postbacks.transports.webhook import CrmWebhook

__all__ = [
    "CONTENT_TYPES",
    "FORBIDDEN_HEADERS",
    "IDEMPOTENCY_HEADER",
    "KIND_CHOICES",
    "NO_SECRETS",
    "REGISTRY",
    "SUCCESS_REGEX_MAX_CHARS",
    "CrmWebhook",
    "DiscordMessage",
    "HttpTransport",
    "MetaConversionsAPI",
    "Outcome",
    "PreparedRequest",
    "Result",
    "S2SPostback",
    "Secrets",
    "SlackMessage",
    "TelegramMessage",
    "TikTokEventsAPI",
    "Transport",
    "get_transport",
    "kind_fields",
    "kind_help",
    "parse_headers",
    "parse_retry_after",
    "success_error",
    "success_regex",
]

KINDS: tuple[type[Transport], ...] = (
    S2SPostback,
    CrmWebhook,
    MetaConversionsAPI,
    TikTokEventsAPI,
    TelegramMessage,
    SlackMessage,
    DiscordMessage,
)
REGISTRY: dict[str, type[Transport]] = {cls.kind: cls for cls in KINDS}
KIND_CHOICES = [(kind, cls.label) for kind, cls in REGISTRY.items()]


def kind_help() -> str:
    """The destination kinds and the rule fields each uses (its label in brackets where it
    differs), one sentence per kind: the API's description of ``kind``."""
    parts = []
    for kind, cls in REGISTRY.items():
        names = [
            f"{name} ({cls.labels[name]})" if name in cls.labels else name
            for name in cls.fields
            if not name.startswith("clear_")
        ]
        parts.append(f"{kind}: {', '.join(names)}.")
    return "Destination kind; the fields each kind uses (others are ignored): " + " ".join(parts)


def kind_fields() -> dict[str, dict[str, object]]:
    """Each kind's form shape, from its transport class: ``{kind: {"fields": [rule field
    names], "signed": bool, "labels": {field: label}, "help": {field: help text}}}`` (the
    rule form's script reads it)."""
    return {
        kind: {
            "fields": list(cls.fields),
            "signed": cls.signed,
            "labels": dict(cls.labels),
            "help": dict(cls.help),
        }
        for kind, cls in REGISTRY.items()
    }


def get_transport(kind: str) -> Transport:
    """The transport for a destination kind; raises KeyError for an unknown kind."""
    return REGISTRY[kind]()
