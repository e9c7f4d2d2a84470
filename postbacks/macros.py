"""Macro (token) catalogue and renderer for postback templates.

A macro is ``{name}`` in a template. Names follow the ClickFlare token table
(``{externalid}``, ``{click.id}``, ``{transaction.id}``, ``{campaign.id}``...) plus the
common aliases networks and trackers use (``{external_id}``, ``{click_id}``, ``{txid}``).
Unknown macros are left verbatim so a typo shows in the postback log instead of vanishing.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from tracker.models import Click, Conversion

MACRO_RE = re.compile(r"\{([A-Za-z0-9_.]+(?::[A-Za-z0-9_.\-]+)?)\}")

# name -> description, shown in the admin's help and used to validate templates.
CATALOGUE: dict[str, str] = {
    "externalid": "Traffic source's click ID from the campaign URL (external ID).",
    "external_id": "Same as {externalid}.",
    "click_id": "Our click ID (UUID).",
    "cf_click_id": "Same as {click_id}.",
    "click.id": "Same as {click_id}.",
    "payout": "Conversion payout, e.g. 2.35.",
    "payout_currency": "Payout currency, ISO 4217, e.g. USD.",
    "currency": "Same as {payout_currency}.",
    "txid": "Transaction ID sent by the affiliate network.",
    "transaction.id": "Same as {txid}.",
    "conversion.id": "Our conversion ID.",
    "conversion.type": "Conversion type (ct), e.g. lead, sale.",
    "status": "Conversion status: approved, pending or rejected.",
    "rejection_reason": "Rejection reason of a rejected conversion.",
    "campaign.id": "Campaign ID.",
    "offer.id": "Offer ID.",
    "trafficsource.id": "Traffic source ID.",
    "affiliatenetwork.id": "Affiliate network ID.",
    "ip": "Visitor IP address recorded with the click.",
    "timestamp": "Unix time of the event, seconds.",
    "delivery.id": "This postback's delivery ID (UUID), the same on every attempt and replay: "
    "receivers deduplicate on it (also sent as the Idempotency-Key header).",
    **{f"var{i}": f"Custom variable {i} from the campaign URL." for i in range(1, 11)},
    **{f"param{i}": f"Conversion parameter {i} sent by the network." for i in range(1, 21)},
}
NAMED_VAR_PREFIX = "var:"


def help_text() -> str:
    """One line listing every macro, for admin help and validation errors."""
    names = [f"{{{name}}}" for name in CATALOGUE if not name[-1].isdigit()]
    return (
        "Macros: "
        + ", ".join(names)
        + ", {var1}..{var10}, {param1}..{param20}, {var:<parameter name>}."
    )


def format_value(value: object) -> str:
    """Text for one macro value: Decimals without trailing zeros, None as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        text = format(value.normalize(), "f")
        return "0" if text in ("-0", "") else text
    return str(value)


def find_macros(template: str) -> list[str]:
    """Macro names in ``template``, in order, e.g. ``['externalid', 'payout']``."""
    return MACRO_RE.findall(template)


def unknown_macros(template: str) -> list[str]:
    """Names in ``template`` that are neither in the catalogue nor ``var:<name>``."""
    return [
        name
        for name in find_macros(template)
        if name not in CATALOGUE and not name.startswith(NAMED_VAR_PREFIX)
    ]


def build_context(click: Click, conversion: Conversion | None = None) -> dict[str, str]:
    """Every macro's value for an event, as text (not yet URL-encoded).

    ``var:<name>`` entries come from the traffic source's parameters (prefetch
    ``traffic_source__parameters`` to avoid a query).
    """
    offer = click.offer
    values: dict[str, object] = {
        "externalid": click.external_id,
        "click_id": click.pk,
        "campaign.id": click.campaign_id,
        "offer.id": click.offer_id,
        "trafficsource.id": click.traffic_source_id,
        "affiliatenetwork.id": offer.affiliate_network_id if offer else None,
        "ip": click.ip,
        "timestamp": int((conversion or click).created_at.timestamp()),
    }
    for i in range(1, 11):
        values[f"var{i}"] = getattr(click, f"var{i}")
    for param in click.traffic_source.parameters.all():
        values[f"{NAMED_VAR_PREFIX}{param.name}"] = getattr(click, f"var{param.slot}")
    if conversion is not None:
        values.update(
            {
                "payout": conversion.payout,
                "payout_currency": conversion.currency,
                "txid": conversion.txid,
                "conversion.id": conversion.pk,
                "conversion.type": conversion.conversion_type,
                "status": conversion.status,
                "rejection_reason": conversion.rejection_reason,
            }
        )
        for i in range(1, 21):
            values[f"param{i}"] = conversion.params.get(f"param{i}")
    values["external_id"] = values["externalid"]
    values["cf_click_id"] = values["click.id"] = values["click_id"]
    values["currency"] = values.get("payout_currency")
    values["transaction.id"] = values.get("txid")
    return {name: format_value(value) for name, value in values.items()}


def render(template: str, context: dict[str, str], *, url_encode: bool = True) -> str:
    """Fill ``{macro}`` placeholders from ``context``.

    Values are percent-encoded (RFC 3986, nothing kept safe) when ``url_encode`` is set,
    for use inside a URL. Macros missing from ``context`` render as an empty string when
    they are catalogue names (e.g. ``{payout}`` on a click) and stay verbatim otherwise.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in context:
            value = context[name]
        elif name in CATALOGUE or name.startswith(NAMED_VAR_PREFIX):
            value = ""
        else:
            return match.group(0)
        return quote(value, safe="") if url_encode else value

    return MACRO_RE.sub(substitute, template)
