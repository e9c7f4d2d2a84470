"""The events the tracker records, named for whoever acts on them (the postback rules).

:class:`EventType` says what happened (an impression, a click, a conversion, a later
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


class Trigger(models.TextChoices):
    CREATED = "created", "When the conversion is created"
    CHANGED = "changed", "When its status changes"
    BOTH = "both", "Both"
