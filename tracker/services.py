"""Recording clicks and conversions; each write plans its postbacks in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

from campaigns.models import Campaign, Offer
from postbacks import macros
from postbacks.models import EventType
from postbacks.services import deliveries_plan
from tracker.models import Click, Conversion

EXTERNAL_ID_MAX = 512
VAR_MAX = 255


def campaign_for_click(key: str) -> Campaign | None:
    """The active campaign with this key, with what a click needs prefetched."""
    return (
        Campaign.objects.select_related("traffic_source")
        .prefetch_related("traffic_source__parameters", "campaign_offers__offer")
        .filter(key=key, is_active=True)
        .first()
    )


def _param_value(query: Mapping[str, str], name: str, placeholder: str, limit: int) -> str:
    value = (query.get(name) or "").strip()
    # A placeholder the traffic source did not fill in carries no information.
    if placeholder and value == placeholder:
        return ""
    return value[:limit]


def click_record(
    campaign: Campaign,
    offer: Offer,
    query: Mapping[str, str],
    *,
    ip: str | None,
    user_agent: str,
    referrer: str,
) -> tuple[Click, str]:
    """Record a click and plan click postbacks; returns it with the offer URL to redirect to.

    ``query``: the campaign URL's query parameters; the external ID and var1..var10 are
    read from it per the traffic source's parameter names. ``ip`` must be a valid IPv4/IPv6
    address or None.
    """
    source = campaign.traffic_source
    click = Click(
        campaign=campaign,
        offer=offer,
        traffic_source=source,
        external_id=_param_value(
            query, source.external_id_param, source.external_id_placeholder, EXTERNAL_ID_MAX
        ),
        ip=ip,
        user_agent=user_agent,
        referrer=referrer,
    )
    for param in source.parameters.all():
        if param.is_enabled:
            value = _param_value(query, param.param, param.placeholder, VAR_MAX)
            setattr(click, f"var{param.slot}", value)
    with transaction.atomic():
        click.save(force_insert=True)
        deliveries_plan(event_type=EventType.CLICK, click=click)
    offer_url = macros.render(offer.url, macros.build_context(click))
    return click, offer_url


def conversion_register(
    click: Click,
    *,
    payout: Decimal | None,
    currency: str = "",
    txid: str = "",
    conversion_type: str = "",
    status: str = Conversion.Status.APPROVED,
    params: Mapping[str, str] | None = None,
    method: str = Conversion.Method.S2S,
) -> tuple[Conversion, bool]:
    """Register a conversion for ``click`` and plan its postbacks.

    Payout follows the offer: in manual mode the offer's payout and currency replace what
    the network sent; in automatic mode the network's payout is used, or the offer's when
    none was sent. Returns ``(conversion, created)``; ``created`` is False for a duplicate
    (same click and txid, or a second conversion without txid), which fires nothing.
    """
    offer = click.offer
    network_payout = payout
    if offer is not None and (offer.payout_mode == Offer.PayoutMode.MANUAL or payout is None):
        payout, currency = offer.payout, offer.currency
    currency = currency or (offer.currency if offer else settings.DEFAULT_CURRENCY)
    conversion = Conversion(
        click=click,
        txid=txid,
        conversion_type=conversion_type,
        status=status,
        payout=payout if payout is not None else Decimal("0"),
        currency=currency,
        network_payout=network_payout,
        params=dict(params or {}),
        method=method,
    )
    try:
        with transaction.atomic():
            conversion.save(force_insert=True)
            deliveries_plan(event_type=EventType.CONVERSION, click=click, conversion=conversion)
    except IntegrityError:
        existing = Conversion.objects.filter(click=click, txid=txid).first()
        if existing is None:
            raise
        return existing, False
    return conversion, True
