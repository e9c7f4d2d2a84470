"""Currencies: ISO 4217 codes (per ``pycountry``) and conversion with the admin-edited
exchange rates (:class:`tracker.models.ExchangeRate`, 1 unit in the display currency
``TRACKER_DISPLAY_CURRENCY``)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import pycountry
from django.conf import settings

from tracker.models import ExchangeRate

# Six decimal places, as Conversion.payout and display_payout store them.
QUANTUM = Decimal("0.000001")


def is_known(code: str) -> bool:
    """Whether ``code`` (upper case, 3 letters) is an ISO 4217 currency."""
    return len(code) == 3 and pycountry.currencies.get(alpha_3=code) is not None


def display_currency() -> str:
    """The account's display currency (``TRACKER_DISPLAY_CURRENCY``, default USD)."""
    return settings.TRACKER_DISPLAY_CURRENCY


def rate(code: str) -> Decimal | None:
    """1 unit of ``code`` in the display currency; 1 for the display currency itself; None
    when the rate table has no rate for it."""
    if code == display_currency():
        return Decimal(1)
    return ExchangeRate.objects.filter(currency=code).values_list("rate", flat=True).first()


def to_display(amount: Decimal, code: str) -> tuple[Decimal | None, Decimal | None]:
    """``(amount in the display currency, rate used)``, or ``(None, None)`` without a rate."""
    used = rate(code)
    if used is None:
        return None, None
    try:
        return (amount * used).quantize(QUANTUM), used
    except InvalidOperation:
        return None, None


def convert(amount: Decimal, source: str, target: str) -> Decimal | None:
    """``amount`` of ``source`` in ``target`` through the display currency, 6 decimal
    places; None when either rate is missing."""
    if source == target:
        return amount
    from_rate, to_rate = rate(source), rate(target)
    if from_rate is None or not to_rate:
        return None
    try:
        return (amount * from_rate / to_rate).quantize(QUANTUM)
    except InvalidOperation:
        return None
