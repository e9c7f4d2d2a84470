"""The choices a postback rule is made of, in a module of their own.

The rule model (``postbacks.models``) and the transports that validate and prepare a rule's
request (``postbacks.transports``) both read them; here neither has to import the other.
``postbacks.models`` re-exports every name, so ``from postbacks.models import EventType``
keeps working. The event types and triggers are the tracker's (:mod:`tracker.events`): the
tracker names the event it records, the rules here choose which to fire on.
"""

from __future__ import annotations

from django.db import models

from tracker.events import EventType, Trigger

__all__ = [
    "EVENT_TYPE_HELP",
    "MAX_DELAY_SECONDS",
    "BodyFormat",
    "EventType",
    "HttpMethod",
    "SuccessMode",
    "Trigger",
]

MAX_DELAY_SECONDS = 7 * 24 * 3600


EVENT_TYPE_HELP = (
    "Impression: an ad view counted by the pixel /i/<campaign key>. "
    "Click: a visit through the campaign URL /c/<campaign key>. "
    "Conversion: a conversion of a click (each one, or only the click's first with "
    "'first conversion only'). "
    "Event: a later conversion on a click that already converted (upsell, deposit, rebill)."
)


class HttpMethod(models.TextChoices):
    GET = "GET", "GET"
    POST = "POST", "POST"


class BodyFormat(models.TextChoices):
    NONE = "none", "No body"
    FORM = "form", "Form (application/x-www-form-urlencoded)"
    JSON = "json", "JSON (application/json)"


class SuccessMode(models.TextChoices):
    STATUS = "status", "Any 2xx answer"
    CONTAINS = "contains", "2xx and the body contains the text"
    REGEX = "regex", "2xx and the body matches the regular expression"
