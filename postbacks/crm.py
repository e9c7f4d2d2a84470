"""CRM status sync back: a CRM that receives our webhooks tells the tracker a lead was
approved, rejected or refunded, and the rules that fire on that status change fire.

``POST /crm/<rule id>/status`` (see :mod:`tracker.views.crm`), ``<rule id>`` naming the CRM
webhook rule (kind ``webhook``) whose signing secret authenticates the call: the request is
signed as our webhooks are (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``), with the rule's current secret or the previous one during a
rotation's grace period. JSON body (at most ``BODY_MAX_BYTES``)::

    {"conversion_id": 42, "status": "approved"}
    {"click_id": "<our click ID>", "txid": "T-1", "status": "rejected",
     "rejection_reason": "fraud", "payout": "12.50", "note": "duplicate lead"}

``status``: approved, pending, rejected, refunded, any case, or an alias (chargeback,
declined, hold...: ``campaigns.models.status_from_text``). ``click_id`` without ``txid``
names the click's only conversion. ``payout`` (number or decimal text, in the conversion's
currency) replaces the payout before the status change, so the postbacks it fires carry
it. Only conversions within the rule's scope (campaigns, offers, sources, networks) can be
changed; others are unknown to this caller.

Answers: 200 ``{"status": "ok", "conversion_id": n, "changed": true | false}``; 400
``invalid_json``, ``invalid_request``, ``missing_status``, ``invalid_status``,
``invalid_conversion_id``, ``invalid_click_id``, ``missing_conversion``,
``ambiguous_conversion``, ``invalid_payout``, ``invalid_characters``; 401
``invalid_signature`` | ``stale_timestamp``; 403 ``signing_not_configured``; 404
``unknown_rule`` | ``unknown_conversion``; 405; 409 ``webhook_id_reused``; 413
``body_too_large``; 503 ``unavailable``. A request carrying a ``webhook-id`` already
answered 200 for this rule is answered the same again and changes nothing (the CRM
retries safely); with another body it is a 409 ``webhook_id_reused`` (nothing changed).
Every call is in the inbound log (channel ``crm``, the query column holding
``rule=<id>&webhook-id=<id>``).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.db import DatabaseError, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from campaigns.models import status_from_text
from postbacks import signing
from postbacks.models import PostbackRule
from postbacks.services import scope_of
from postbacks.transports import CrmWebhook
from tracker import currency, ingest, services
from tracker.forms import PAYOUT_LIMIT, PAYOUT_QUANTUM, PAYOUT_RANGE_ERROR
from tracker.macros import format_value
from tracker.models import Conversion, ConversionStatusChange, InboundRequest

logger = logging.getLogger(__name__)
CHANNEL = InboundRequest.Channel.CRM
SOURCE = ConversionStatusChange.Source.CRM
KIND = CrmWebhook.kind
BODY_MAX_BYTES = 64 * 1024
FIELDS = ("conversion_id", "click_id", "txid", "status", "rejection_reason", "payout", "note")
TEXT_MAX = {"txid": 255, "rejection_reason": 255, "note": 2000, "status": 64}
# A signed request verifies for 5 minutes either side of its timestamp: a replay comes
# within 10 minutes of the first call. Looking that far back finds every replay.
REPLAY_WINDOW = timedelta(minutes=15)
PK_MAX = 2**63 - 1
Outcome = InboundRequest.Outcome


@dataclass
class CrmResult(ingest.Result):
    """An :class:`ingest.Result` whose caller gets ``answer`` (default: ``body``) while the
    inbound log keeps ``body`` (with its ``detail``) and ``log_outcome`` when set."""

    answer: dict | None = None
    log_outcome: str = ""

    @property
    def outcome(self) -> str:
        if self.log_outcome:
            return self.log_outcome
        if self.status in (401, 403):
            return Outcome.FORBIDDEN
        return super().outcome


class Refusal(Exception):
    """A request answered ``status`` ``{"error": code, "detail": detail}``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def refusal_result(status: int, code: str, detail: str) -> CrmResult:
    """A refusal in the documented shape ``{"error": code, "detail": detail}``."""
    return CrmResult(status, {"error": code, "detail": detail})


def status_sync(
    rule_id: int, body: bytes, headers: Mapping[str, str], inbound: ingest.Inbound
) -> CrmResult:
    """Apply one signed status update from a CRM and log it; see the module docstring.

    ``body``: the raw body (at most ``BODY_MAX_BYTES``, checked by the caller);
    ``headers``: the request's (any case); ``inbound``: what the log keeps of the request
    (its ``query`` is set here). Never raises for any input; a database failure is a 503.
    """
    click = None
    try:
        rule = _rule(rule_id)
        msg_id = _authenticate(rule, body, headers)
        inbound.query = f"rule={rule.pk}&webhook-id={msg_id}"
        replayed = _replay(inbound)
        if replayed is not None:
            return ingest.record(inbound, replayed)
        data = _parse(body)
        status, payout = _status(data), _payout(data.get("payout", ""))
        conversion = _conversion(rule, data)
        click = conversion.click
        return _apply(conversion, status, payout, data, inbound)
    except Refusal as exc:
        result = refusal_result(exc.status, exc.code, exc.detail)
    except DatabaseError:
        logger.exception("CRM status sync not applied: database error.")
        result = refusal_result(503, "unavailable", "Not applied; retry later.")
    return ingest.record(inbound, result, click=click)


def _rule(rule_id: int) -> PostbackRule:
    rule = None
    if 0 < rule_id <= PK_MAX:
        rule = PostbackRule.objects.filter(pk=rule_id, kind=KIND).first()
    if rule is None:
        raise Refusal(404, "unknown_rule", f"No CRM webhook rule {rule_id}.")
    return rule


def _authenticate(rule: PostbackRule, body: bytes, headers: Mapping[str, str]) -> str:
    """The verified ``webhook-id``; Refusal 403 without a secret, 401 when unsigned,
    badly signed or stale."""
    keys = rule.secrets().signing
    if not keys:
        raise Refusal(
            403,
            "signing_not_configured",
            f"Rule {rule.pk} has no signing secret: generate one, then sign requests with it.",
        )
    try:
        return signing.check(body, headers, keys)
    except signing.SignatureError as exc:
        code = "stale_timestamp" if exc.code == "stale_timestamp" else "invalid_signature"
        raise Refusal(401, code, str(exc)) from None


def _replay(inbound: ingest.Inbound) -> CrmResult | None:
    """The answer already given to this rule's ``webhook-id`` (a 200), else None; 409
    ``webhook_id_reused`` when that ``webhook-id`` came with another body (as the log
    keeps it: its first 4,000 characters), which is not a retry and changes nothing."""
    first = (
        InboundRequest.objects.filter(
            channel=CHANNEL,
            created_at__gte=timezone.now() - REPLAY_WINDOW,
            query=inbound.query,
            response_status=200,
        )
        .order_by("created_at", "id")
        .only("id", "conversion_id", "outcome", "created_at", "body")
        .first()
    )
    if first is None:
        return None
    if first.body != services.storable(inbound.body)[: ingest.LOG_TEXT_MAX]:
        detail = (
            f"webhook-id already applied with another body (inbound log #{first.pk}): "
            "nothing changed. Send a new webhook-id for a new update."
        )
        return CrmResult(409, {"error": "webhook_id_reused", "detail": detail}, conversion_id=None)
    answer = {
        "status": "ok",
        "conversion_id": first.conversion_id,
        "changed": first.outcome != Outcome.DUPLICATE,
    }
    detail = f"Replay of webhook-id already applied (inbound log #{first.pk}): nothing changed."
    return CrmResult(
        200,
        {**answer, "detail": detail},
        conversion_id=first.conversion_id,
        answer=answer,
        log_outcome=Outcome.DUPLICATE,
    )


def _parse(body: bytes) -> dict[str, str]:
    """The body's fields as text (numbers kept exact); Refusal 400 otherwise."""
    try:
        payload = json.loads(body, parse_float=str, parse_int=str, parse_constant=str)
    except (ValueError, RecursionError) as exc:
        raise Refusal(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Refusal(400, "invalid_json", "The JSON body must be an object.")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise Refusal(400, "invalid_request", f"Unknown field {names}: send {', '.join(FIELDS)}.")
    data = {}
    for key, value in payload.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str):
            raise Refusal(400, "invalid_request", f"{key} must be a string or a number.")
        if "\x00" in value or not _encodable(value):
            raise Refusal(400, "invalid_characters", f"{key} holds a NUL or a lone surrogate.")
        value = value.strip()
        if len(value) > TEXT_MAX.get(key, 64):
            raise Refusal(400, "invalid_request", f"{key} is over {TEXT_MAX.get(key, 64)} chars.")
        data[key] = value
    return data


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _status(data: dict[str, str]) -> str:
    """Our status for the one sent; Refusal 400 when missing or unknown."""
    if not data.get("status"):
        raise Refusal(400, "missing_status", "Send status: approved, pending, rejected...")
    status = status_from_text(data["status"])
    if status is None:
        detail = (
            f"Unknown status {data['status'][:64]!r}: use "
            f"{', '.join(Conversion.Status.values)} (any case)."
        )
        raise Refusal(400, "invalid_status", detail)
    return status


def _conversion(rule: PostbackRule, data: dict[str, str]) -> Conversion:
    """The conversion the request names, within ``rule``'s scope; Refusal otherwise."""
    found = Conversion.objects.select_related(
        "click__campaign", "click__offer__affiliate_network", "click__traffic_source"
    ).order_by("pk")
    sent = data.get("conversion_id", "")
    if sent:
        if not (sent.isascii() and sent.isdigit()) or not 0 < int(sent) <= PK_MAX:
            detail = f"conversion_id {sent[:40]!r} is not a conversion ID (a positive integer)."
            raise Refusal(400, "invalid_conversion_id", detail)
        found = found.filter(pk=int(sent))
    elif data.get("click_id"):
        try:
            click_id = uuid.UUID(data["click_id"])
        except ValueError:
            detail = f"click_id {data['click_id'][:40]!r} is not a click ID (a UUID)."
            raise Refusal(400, "invalid_click_id", detail) from None
        found = found.filter(click_id=click_id)
        if "txid" in data:
            found = found.filter(txid=data["txid"])
    else:
        detail = "Send conversion_id, or click_id (with txid when the click converted twice)."
        raise Refusal(400, "missing_conversion", detail)
    matches = list(found[:2])
    if len(matches) > 1:
        detail = "That click has several conversions: send txid or conversion_id."
        raise Refusal(400, "ambiguous_conversion", detail)
    prefetch_related_objects([rule], "campaigns", "offers", "traffic_sources", "affiliate_networks")
    if matches and rule.in_scope(scope_of(matches[0].click)):
        return matches[0]
    raise Refusal(404, "unknown_conversion", "No such conversion for this CRM webhook rule.")


def _payout(text: str) -> Decimal | None:
    """The payout sent, rounded as stored (None when not sent); Refusal 400 otherwise."""
    if not text:
        return None
    try:
        payout = Decimal(text)
    except InvalidOperation:
        payout = None
    if payout is None or not payout.is_finite():
        raise Refusal(400, "invalid_payout", f"payout {text[:40]!r} is not a number.")
    if payout.copy_abs() >= PAYOUT_LIMIT:
        raise Refusal(400, "invalid_payout", PAYOUT_RANGE_ERROR)
    payout = payout.quantize(PAYOUT_QUANTUM, rounding=ROUND_HALF_UP)
    if payout.copy_abs() >= PAYOUT_LIMIT:
        raise Refusal(400, "invalid_payout", PAYOUT_RANGE_ERROR)
    return payout


def _apply(
    conversion: Conversion,
    status: str,
    payout: Decimal | None,
    data: dict[str, str],
    inbound: ingest.Inbound,
) -> CrmResult:
    """Change the payout and the status in one transaction with the log row (the
    conversion locked, the replay check repeated under the lock)."""
    click = conversion.click
    with transaction.atomic():
        locked = Conversion.objects.select_for_update().filter(pk=conversion.pk).first()
        if locked is None:  # deleted meanwhile
            raise Refusal(404, "unknown_conversion", "No such conversion any more.")
        replayed = _replay(inbound)
        if replayed is not None:
            return ingest.record(inbound, replayed, click=click, strict=True)
        notes = []
        if payout is not None and payout != locked.payout:
            notes.append(f"payout {format_value(locked.payout)} -> {format_value(payout)}")
            conversion.payout, conversion.currency = payout, locked.currency
            currency.refresh_display_payout(conversion)
            conversion.save(
                update_fields=["payout", "display_payout", "exchange_rate", "display_currency"]
            )
        change = services.conversion_status_change(
            conversion,
            status,
            source=SOURCE,
            rejection_reason=data.get("rejection_reason", ""),
            note=data.get("note", "") or "CRM status sync",
        )
        if change is not None:
            notes.insert(0, f"{change.old_status} -> {change.new_status}")
        answer = {"status": "ok", "conversion_id": conversion.pk, "changed": bool(notes)}
        outcome = (
            Outcome.STATUS_CHANGED if change else Outcome.ACCEPTED if notes else Outcome.DUPLICATE
        )
        detail = "; ".join(notes) or f"Already {locked.status}: nothing changed."
        result = CrmResult(
            200,
            {**answer, "detail": detail},
            conversion_id=conversion.pk,
            network=click.offer.affiliate_network if click.offer else None,
            answer=answer,
            log_outcome=outcome,
        )
        ingest.record(inbound, result, click=click, strict=True)
        if change is not None:
            change.inbound_request = result.log
            change.save(update_fields=["inbound_request"])
    return result
