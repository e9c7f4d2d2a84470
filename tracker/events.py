"""The events the tracker records, named for whoever acts on them (the postback rules).

:class:`Channel` says how a conversion or a status change arrived; :class:`EventType`
says what happened (an impression, a click, a conversion, a later
conversion of a converted click); :class:`Trigger` when a conversion's rules fire (on
creation, on a status change, both). ``postbacks.choices`` re-exports both.
"""

from __future__ import annotations

from django.db import models


class EventType(models.TextChoices):
    IMPRESSION = "impression", "Impression"
    CLICK = "click", "Click"
    CONVERSION = "conversion", "Conversion"
    EVENT = "event", "Event (after a conversion)"


class Channel(models.TextChoices):
    """How a conversion or a status change arrived: the one channel enum of the inbound
    log (``InboundRequest.channel``), a conversion (``Conversion.method``) and a status
    change (``ConversionStatusChange.source``)."""

    S2S = "s2s", "S2S postback"
    PIXEL = "pixel", "Image pixel"
    SCRIPT = "script", "JS script"
    UPLOAD = "upload", "CSV upload"
    API = "api", "API"
    ADMIN = "admin", "Admin"
    CRM = "crm", "CRM status sync"


class Trigger(models.TextChoices):
    CREATED = "created", "When the conversion is created"
    CHANGED = "changed", "When its status changes"
    BOTH = "both", "Both"
