"""Postback rules (what to fire), deliveries (one planned firing) and attempts (the log).

One module per resource: :mod:`~postbacks.models.rules` (the rule) and
:mod:`~postbacks.models.deliveries` (deliveries, attempts, dispatcher processes); they keep
the app label ``postbacks`` and its one migration history. Import models from here (the
rule's choices of :mod:`postbacks.choices` too).
"""

from postbacks.choices import (
    EVENT_TYPE_HELP,
    MAX_DELAY_SECONDS,
    BodyFormat,
    EventType,
    HttpMethod,
    SuccessMode,
    Trigger,
)
from postbacks.models.deliveries import (
    SLOW_MS,
    Attempt,
    Delivery,
    DeliveryQuerySet,
    Worker,
    destination_host,
)
from postbacks.models.rules import PostbackRule

__all__ = [
    "EVENT_TYPE_HELP",
    "MAX_DELAY_SECONDS",
    "SLOW_MS",
    "Attempt",
    "BodyFormat",
    "Delivery",
    "DeliveryQuerySet",
    "EventType",
    "HttpMethod",
    "PostbackRule",
    "SuccessMode",
    "Trigger",
    "Worker",
    "destination_host",
]
