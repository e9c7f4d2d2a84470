"""The choices a postback rule is made of, in a module of their own.

The rule model (``postbacks.models``) and the transports that validate and prepare a rule's
request (``postbacks.transports``) both read them; here neither has to import the other.
``postbacks.models`` re-exports every name, so ``from postbacks.models import EventType``
keeps working.
"""

from __future__ import annotations

from django.db import models

MAX_DELAY_SECONDS = 7 * 24 * 3600


class EventType(models.TextChoices):
    IMPRESSION = "impression", "Impression"
    CLICK = "click", "Click"
    CONVERSION = "conversion", "Conversion"
    EVENT = "event", "Event (after a conversion)"


EVENT_TYPE_HELP = (
    "Impression: an ad view counted by the pixel /i/<campaign key>. "
    "Click: a visit through the campaign URL /c/<campaign key>. "
    "Conversion: a conversion of a click (each one, or only the click's first with "
    "'first conversion only'). "
    "Event: a later conversion on a click that already converted (upsell, deposit, rebill)."
)


class Trigger(models.TextChoices):
    CREATED = "created", "When the conversion is created"
    CHANGED = "changed", "When its status changes"
    BOTH = "both", "Both"


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
