"""The shared interface of destination kinds: what a transport plans, sends and answers."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, ClassVar

from django.db import models

if TYPE_CHECKING:
    from postbacks.models import PostbackRule


class Outcome(models.TextChoices):
    """What one attempt came to; shared by transports, ``Attempt`` and the state machine."""

    DELIVERED = "delivered", "Delivered"
    RETRY = "retry", "Failed, will retry"
    FAILED = "failed", "Failed"


@dataclass
class PreparedRequest:
    """A request planned for a delivery: method, URL, body (text), headers, and what
    counts as success (``success_mode``: ``status``, ``contains`` or ``regex``, the values
    of ``postbacks.choices.SuccessMode``, with ``success_pattern``)."""

    method: str
    url: str
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    success_mode: str = "status"
    success_pattern: str = ""


@dataclass
class Result:
    """What one attempt got back.

    ``outcome`` is ``delivered``, ``retry`` (timeout, connection error, 408, 429, 5xx, a 2xx
    without the expected body) or ``failed`` (any other answer, 410 Gone included, a
    refused destination or an unusable URL).
    ``retry_after``: seconds the destination asked us to wait (429 only), else None.
    """

    outcome: Outcome
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    duration_ms: int = 0
    retry_after: float | None = None


@dataclass(frozen=True)
class Secrets:
    """What a transport adds to a planned request at sending time and never stores in it:
    ``signing``: Standard Webhooks secrets (``whsec_...``) to sign with, the current one
    first, then a previous one still within its rotation grace period (empty: unsigned);
    ``access_token``: a platform's access or bot token (empty: none configured)."""

    signing: tuple[str, ...] = ()
    access_token: str = ""


NO_SECRETS = Secrets()


def json_object(body: str) -> dict | None:
    """``body`` parsed as a JSON object; None for anything else (not JSON, a list...)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def retry_seconds(value: object) -> float | None:
    """A ``retry_after`` value from a platform's JSON answer as seconds (may be
    fractional); None unless a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


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

    Contract:

    - :meth:`validate` checks a rule (saved or not) before it is saved: it raises
      ``ValidationError({field: [messages]})`` keyed by rule field names and returns the
      warnings; it never sends anything nor queries the database.
    - :meth:`prepare` runs when the event is written and renders the rule's templates with
      the macro context, each value escaped for where it lands (URL-encoded in the URL and
      a form body, JSON-escaped in a JSON body, control characters removed in headers); it
      never raises for a template (unknown macros stay verbatim).
    - :meth:`send` runs in a worker and **never raises**: whatever happens, it answers with
      a :class:`Result` (an unexpected error is a retryable result).
    """

    kind: ClassVar[str]
    label: ClassVar[str]
    # The rule's destination fields this kind uses, in form order: the rule form shows
    # these and hides the others', the API documents them per kind. ``http_method`` among
    # them: the body fields show only for a POST.
    fields: ClassVar[tuple[str, ...]] = ()
    # Whether requests can carry Standard Webhooks signatures (the signing section).
    signed: ClassVar[bool] = False
    # Field labels of this kind where they differ from the rule's (e.g. "Chat ID").
    labels: ClassVar[dict[str, str]] = {}
    # Field help texts of this kind where they differ from the rule's.
    help: ClassVar[dict[str, str]] = {}

    def validate(self, rule: PostbackRule, *, known_vars: set[str] | None = None) -> list[str]:
        """Warnings about ``rule``; raises ValidationError keyed by field for errors.
        ``known_vars``: the named parameters of its traffic sources (None: any)."""
        raise NotImplementedError

    def prepare(self, rule: PostbackRule, context: dict[str, str]) -> PreparedRequest:
        """The request to plan for one event; ``context`` from ``macros.build_context``
        plus ``delivery.id``."""
        raise NotImplementedError

    def send(
        self, request: PreparedRequest, timeout: float, secrets: Secrets = NO_SECRETS
    ) -> Result:
        """Send ``request`` within ``timeout`` seconds of wall time, with what ``secrets``
        adds (signatures, an access token) at sending time; never raises."""
        raise NotImplementedError

    def validate_template(self, template: str) -> None:
        """Raise ValidationError when a URL template cannot be rendered into a request
        (the URL part of :meth:`validate`, for callers that only have the URL)."""
        raise NotImplementedError


def parse_headers(template: str) -> list[tuple[int, str, str]]:
    """``(line number, name, value template)`` of each "Name: value" line; blank lines are
    skipped, a line without a colon gives an empty name (refused by :meth:`validate`)."""
    lines = []
    for number, line in enumerate(template.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        lines.append((number, name.strip() if sep else "", value.strip()))
    return lines
