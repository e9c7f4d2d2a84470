"""Registering a conversion from any inbound method: S2S postback, image pixel, JS script,
CSV upload row, admin or API. One path for all of them, so that validation, network
checks, deduplication, status changes, payout rules and the inbound log are the same.

Flow of :func:`conversion_ingest`: the network's parameter names are mapped (when the
network is known from its postback URL), the click ID falls back to the first-party
cookie (pixel and script), the parameters are validated (:class:`ConversionPostbackForm`),
then in one transaction: the click is looked up, the network's IP allowlist and token are
checked, the status is mapped, and the conversion is created, or its status changed, or it
is answered as a duplicate; its postbacks are planned and the inbound-log row written. A
failure anywhere rolls everything back: nothing is half-written. A connection PostgreSQL
dropped (failover, restart) is replaced and the transaction run once more when that cannot
write anything twice (:func:`_write_retried`); a 503 that remains is still logged, on a
fresh connection when the database takes it, and always in the process log.

Answers (``Result.status`` and ``Result.body``): 200 ``{"status": "ok" | "status_changed" |
"duplicate", "conversion_id": n, ...}``; 400 (the form's codes, ``invalid_status``,
``invalid_timestamp``, ``invalid_request``); 403 ``forbidden_ip`` | ``forbidden_token`` |
``network_mismatch``; 404 ``unknown_click_id``; 503 ``unavailable``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.db import DatabaseError, DataError, IntegrityError
from django.http import QueryDict
from django.utils import timezone

from campaigns.models import AffiliateNetwork, status_from_text
from tracker import db, metrics, rows, services
from tracker.forms import ConversionPostbackForm
from tracker.models import (
    Click,
    Conversion,
    ConversionType,
    ConversionUpload,
    InboundRequest,
)

logger = logging.getLogger(__name__)
LOG_TEXT_MAX = 4000
Channel = InboundRequest.Channel
Outcome = InboundRequest.Outcome
# Conversion types sent without a status that mean a refund of an earlier conversion.
REFUND_TYPES = frozenset({"refund", "chargeback"})
# Browser channels: the request comes from the visitor, so the network's IP allowlist
# cannot apply (its token still does: it can be written into the pixel URL).
BROWSER_CHANNELS = frozenset({Channel.PIXEL, Channel.SCRIPT})
# Channels of signed-in users (admin, API, upload): the network's checks do not apply.
TRUSTED_CHANNELS = frozenset({Channel.UPLOAD, Channel.API, Channel.ADMIN})


@dataclass
class Inbound:
    """Where a conversion came from, as the inbound log keeps it.

    ``channel``: s2s, pixel, script, upload, api or admin. ``network``: the network named by
    the postback URL ``/cv/<key>``, else None (the click's offer decides). ``cookie_click_id``:
    the click-ID cookie, used when no click ID was sent (pixel and script). ``received_at``:
    the conversion time when none is sent (upload time for a file). ``user``: the signed-in
    user for admin, API and upload.
    """

    channel: str = Channel.S2S
    endpoint: str = ""
    http_method: str = ""
    query: str = ""
    body: str = ""
    ip: str | None = None
    user_agent: str = ""
    network: AffiliateNetwork | None = None
    cookie_click_id: str = ""
    upload: ConversionUpload | None = None
    row_number: int | None = None
    user: Any = None
    received_at: datetime | None = None


@dataclass
class Result:
    """The answer to one inbound conversion: HTTP ``status``, JSON ``body``, the conversion
    (when one was matched), the network identified and the inbound-log row written."""

    status: int
    body: dict
    conversion_id: int | None = None
    network: AffiliateNetwork | None = None
    log: InboundRequest | None = None
    extra: dict = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """The inbound log's outcome for this answer."""
        if self.status == 404 and self.body.get("error") == "unknown_click_id":
            return Outcome.UNKNOWN_CLICK
        if self.status == 403:
            return Outcome.FORBIDDEN
        if self.status >= 500:
            return Outcome.ERROR
        if self.status >= 400:
            return Outcome.INVALID
        return {
            "ok": Outcome.ACCEPTED,
            "status_changed": Outcome.STATUS_CHANGED,
        }.get(self.body.get("status", ""), Outcome.DUPLICATE)

    @property
    def accepted(self) -> bool:
        return self.status < 400


# What a 503 ``unavailable`` asks the network to wait before it sends the postback again.
RETRY_AFTER_SECONDS = 10


def error_result(status: int, code: str, detail: str, **extra: Any) -> Result:
    """A refusal in the documented shape ``{"error": code, "detail": detail}``."""
    return Result(status, {"error": code, "detail": detail}, **extra)


_types_cache: tuple[float, frozenset[str]] = (0.0, frozenset())


def types_cache_clear(**_: object) -> None:
    """Forget the cached conversion types (a signal receiver)."""
    global _types_cache
    _types_cache = (0.0, frozenset())


def allows_several(conversion_type: str) -> bool:
    """Whether the conversion type (any case) allows several conversions per click without
    a txid (:attr:`ConversionType.allow_multiple`). Read from the database at most every 5 s
    per process."""
    global _types_cache
    loaded, codes = _types_cache
    now = time.monotonic()
    if not loaded or now - loaded > 5:
        codes = frozenset(
            ConversionType.objects.filter(allow_multiple=True).values_list("code", flat=True)
        )
        _types_cache = (now, codes)
    return conversion_type.strip().lower() in codes


def conversion_ingest(data: Mapping[str, str], inbound: Inbound) -> Result:
    """Register one inbound conversion and log it; see the module docstring.

    ``data``: the parameters by our names (``click_id``, ``payout``, ``txid``, ``ct``,
    ``status``, ``rejection_reason``, ``payout_currency``/``currency``, ``timestamp``,
    ``test``, ``param1..20``, ``token``) or by the network's (``inbound.network``'s
    parameter mapping). Never raises for bad input; a database failure is a 503 result.
    """
    query = data if isinstance(data, QueryDict) else _querydict(data)
    network = inbound.network
    sent_as: dict[str, str] = {}
    if network is not None and network.param_map:
        sent_as = network.sent_as(query)
        query = network.map_params(query)
    if inbound.cookie_click_id and not (query.get("click_id") or query.get("cf_click_id")):
        query = query.copy()
        query["click_id"] = inbound.cookie_click_id
    form = ConversionPostbackForm(query)
    if not form.is_valid():
        detail = form.error_detail(sent_as)
        result = error_result(400, form.error_code(), detail, network=network)
        return record(inbound, result, click_id=_sent_click_id(query))
    try:
        return _write_retried(form, query, inbound)
    except DataError as exc:
        result = error_result(400, "invalid_request", f"Refused: {exc}", network=network)
    except DatabaseError:
        logger.exception(
            "Conversion refused with 503 unavailable (database error): %s %s, click ID %r.",
            inbound.channel,
            inbound.endpoint,
            _sent_click_id(query),
        )
        detail = "The conversion could not be recorded; retry later."
        result = error_result(503, "unavailable", detail, network=network)
        result.extra["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return record(inbound, result, click_id=_sent_click_id(query))


def _write_retried(form: ConversionPostbackForm, query: QueryDict, inbound: Inbound) -> Result:
    """:func:`_write`, run again when another run cannot write anything twice:

    - once after an IntegrityError: a concurrent request inserted the same dedup key after
      our lookup; rolled back, the second run sees it (duplicate or status change);
    - up to :data:`tracker.db.RECONNECTS` times after the connection was dropped (failover,
      restart, ``pg_terminate_backend``) inside the transaction, or during its COMMIT when
      it was not written (see :func:`_write`): nothing was written; the next run takes a
      fresh connection (see :mod:`tracker.db`).

    Raises the last ``DatabaseError`` when a run fails and no further run is allowed.
    """
    integrity_retried, reconnects = False, 0
    while True:
        try:
            return _write(form, query, inbound)
        except IntegrityError:
            if integrity_retried:
                raise
            integrity_retried = True
        except db.BrokeBeforeCommit as lost:
            if not db.reconnect(lost, reconnects):
                raise lost.error from lost.error.__cause__
            reconnects += 1
            logger.warning("Conversion retried on a fresh database connection: %s", lost.error)


def _write(form: ConversionPostbackForm, query: QueryDict, inbound: Inbound) -> Result:
    """:func:`_in_transaction` in one transaction.

    Raises :class:`tracker.db.BrokeBeforeCommit` when the connection broke before COMMIT,
    and also when it broke during COMMIT and the transaction was not written: its
    inbound-log row, whose ID is known before COMMIT, exists exactly when it was. Written,
    the result is returned as if nothing had happened (its Celery wake-up, an on-commit
    hook, is not sent: the sweeper finds its deliveries).
    """
    written: Result | None = None
    try:
        with db.atomic():
            written = _in_transaction(form, query, inbound)
    except db.CONNECTION_ERRORS as exc:
        if written is None or written.log is None or db.in_transaction() or not db.dropped(exc):
            raise
        db.release_closed()
        if InboundRequest.objects.filter(pk=written.log.pk).exists():
            logger.warning("Conversion written although COMMIT's answer was lost: %s", exc)
            return written
        raise db.BrokeBeforeCommit(exc) from exc
    return written


def _click_uuid(form: ConversionPostbackForm) -> uuid.UUID:
    """The click ID of a validated form: ``is_valid()`` sets it or fails."""
    if form.click_uuid is None:
        raise ValueError("The conversion form has not been validated.")
    return form.click_uuid


def _in_transaction(form: ConversionPostbackForm, query: QueryDict, inbound: Inbound) -> Result:
    """The transactional part: lookup, checks, create or change, deliveries, log row."""
    data = form.cleaned_data
    several = allows_several(data["ct"])
    key = services.dedup_key(data["txid"], data["ct"], several=several)
    click, existing_id, has_conversion = services.click_for_conversion(_click_uuid(form), key)
    click_text = str(form.click_uuid)
    if click is None:
        result = error_result(
            404, "unknown_click_id", f"No click with ID {click_text}.", network=inbound.network
        )
        return record(inbound, result, click_id=click_text, strict=True)
    offer_network = click.offer.affiliate_network if click.offer else None
    network = inbound.network or offer_network
    refusal = _check_network(inbound, network, offer_network, data["token"])
    if refusal is not None:
        refusal.network = network
        return record(inbound, refusal, click=click, strict=True)
    if inbound.network is None and offer_network is not None and offer_network.param_map:
        # The network's own parameter names, now that the click names the network.
        form = ConversionPostbackForm(offer_network.map_params(query))
        if not form.is_valid():
            detail = form.error_detail(offer_network.sent_as(query))
            result = error_result(400, form.error_code(), detail, network=network)
            return record(inbound, result, click=click, strict=True)
        data = form.cleaned_data
        several = allows_several(data["ct"])
        new_key = services.dedup_key(data["txid"], data["ct"], several=several)
        if new_key != key:
            key = new_key
            click, existing_id, has_conversion = services.click_for_conversion(
                _click_uuid(form), key
            )
            if click is None:
                detail = f"No click with ID {form.click_uuid}."
                result = error_result(404, "unknown_click_id", detail, network=network)
                return record(inbound, result, click_id=str(form.click_uuid), strict=True)
    sent_status = data["status"]
    if not sent_status and data["ct"].lower() in REFUND_TYPES:
        sent_status = Conversion.Status.REFUNDED
    status = status_from_text(sent_status or "approved", network.status_map if network else None)
    if status is None:
        return record(inbound, _invalid_status(data["status"], network), click=click, strict=True)
    converted_at = data["timestamp"] or inbound.received_at or timezone.now()
    if converted_at < click.created_at:
        detail = (
            f"The conversion time {converted_at.isoformat()} is before the click "
            f"({click.created_at.isoformat()})."
        )
        result = error_result(400, "invalid_timestamp", detail, network=network)
        return record(inbound, result, click=click, strict=True)
    if existing_id is not None and not (
        network is not None and network.accept_duplicates and not data["txid"]
    ):
        return _existing(inbound, click, existing_id, status if sent_status else "", data, network)
    if existing_id is not None:
        # The network accepts duplicates: a repeat without a txid is a new conversion.
        key = services.dedup_key("", data["ct"], several=True)
    conversion = services.conversion_create(
        click,
        payout=data["payout"],
        currency=data["payout_currency"],
        txid=data["txid"],
        conversion_type=data["ct"],
        status=status,
        params=form.params(),
        method=inbound.channel,
        rejection_reason=data["rejection_reason"] if status == "rejected" else "",
        is_first=not has_conversion,
        dedup=key,
        is_test=data["test"],
        converted_at=converted_at,
    )
    body = {"status": "ok", "conversion_id": conversion.pk}
    if conversion.is_test:
        body["test"] = True
    result = Result(200, body, conversion_id=conversion.pk, network=network)
    return record(inbound, result, click=click, converted_at=converted_at, strict=True)


def _check_network(
    inbound: Inbound,
    network: AffiliateNetwork | None,
    offer_network: AffiliateNetwork | None,
    token: str,
) -> Result | None:
    """A 403 result when the network's checks refuse the request, else None."""
    if inbound.channel in TRUSTED_CHANNELS:
        return None
    if (
        inbound.network is not None
        and offer_network is not None
        and inbound.network != offer_network
    ):
        detail = (
            f"The click belongs to an offer of network {offer_network.pk}, not of network "
            f"{inbound.network.pk} named by this postback URL."
        )
        return error_result(403, "network_mismatch", detail)
    if network is None:
        return None
    if inbound.channel not in BROWSER_CHANNELS and not network.ip_allowed(inbound.ip):
        detail = f"{inbound.ip or 'This address'} is not allowed for network {network.pk}."
        return error_result(403, "forbidden_ip", detail)
    if not network.token_matches(token):
        detail = f"Missing or wrong security token for network {network.pk}."
        return error_result(403, "forbidden_token", detail)
    return None


def _invalid_status(sent: str, network: AffiliateNetwork | None) -> Result:
    pairs = sorted((network.status_map or {}).items()) if network else []
    mapping = f" or the network's values {', '.join(f'{k}={v}' for k, v in pairs)}"
    detail = (
        f"Unknown status {sent[:64]!r}: use {', '.join(Conversion.Status.values)}"
        f" (any case){mapping if pairs else ''}."
    )
    return error_result(400, "invalid_status", detail, network=network)


def _existing(
    inbound: Inbound,
    click: Click,
    conversion_id: int,
    status: str,
    data: dict,
    network: AffiliateNetwork | None,
) -> Result:
    """A repeat for an existing conversion: a status change, or a duplicate when no status
    or the same one was sent."""
    # The row alone, by primary key; the click (with its cached offer, network and traffic
    # source) is the one already loaded. A join to the click table here let a planner with
    # stale statistics scan every click for each repeat (600 ms at 100,000 clicks).
    conversion = Conversion.objects.order_by().get(pk=conversion_id)
    conversion.click = click
    change = None
    if status:
        change = services.conversion_status_change(
            conversion,
            status,
            source=inbound.channel,
            rejection_reason=data["rejection_reason"],
            user=inbound.user,
        )
    if change is None:
        body = {"status": "duplicate", "conversion_id": conversion_id}
        result = Result(200, body, conversion_id=conversion_id, network=network)
        return record(inbound, result, click=click, strict=True)
    body = {
        "status": "status_changed",
        "conversion_id": conversion_id,
        "previous_status": change.old_status,
        "new_status": change.new_status,
    }
    result = Result(200, body, conversion_id=conversion_id, network=network)
    record(inbound, result, click=click, strict=True)
    change.inbound_request = result.log
    change.save(update_fields=["inbound_request"])
    return result


_R = TypeVar("_R", bound="Result")


def record(
    inbound: Inbound,
    result: _R,
    *,
    click: Click | None = None,
    click_id: str = "",
    converted_at: datetime | None = None,
    strict: bool = False,
) -> _R:
    """Write ``result`` for ``inbound`` to the inbound log; returns ``result`` with ``log``.

    ``strict`` (inside the conversion's transaction): a failure to write raises, so that
    nothing is committed. Otherwise the row is written once more on a fresh connection when
    the connection was dropped, and a failure is logged and the result returned anyway.
    """
    row = InboundRequest(
        channel=inbound.channel,
        network=result.network,
        click_id=services.storable(str(click.pk) if click is not None else click_id)[:64],
        upload=inbound.upload,
        row_number=inbound.row_number,
        visit_at=click.created_at if click is not None else None,
        converted_at=converted_at,
        endpoint=services.storable(inbound.endpoint)[:32],
        method=services.storable(inbound.http_method)[:8],
        query=services.storable(inbound.query)[:LOG_TEXT_MAX],
        body=services.storable(inbound.body)[:LOG_TEXT_MAX],
        ip=inbound.ip,
        user_agent=services.storable(inbound.user_agent)[:LOG_TEXT_MAX],
        response_status=result.status,
        outcome=result.outcome,
        error_code=result.body.get("error", ""),
        detail=services.storable(str(result.body.get("detail", "")))[:LOG_TEXT_MAX],
        conversion_id=result.conversion_id,
    )
    metrics.INBOUND_REQUESTS.labels(inbound.channel, result.outcome).inc()
    try:
        rows.insert([row])
    except DatabaseError as exc:
        if strict:
            raise
        # A refusal because the connection broke (a 503) is logged on a fresh one.
        if not db.reconnect(exc):
            return _not_logged(inbound, result)
        try:
            row.save(force_insert=True)
        except DatabaseError:
            return _not_logged(inbound, result)
    result.log = row
    return result


def _not_logged(inbound: Inbound, result: _R) -> _R:
    logger.warning(
        "Inbound request not logged (database error): %s %s answered %s %s.",
        inbound.channel,
        inbound.endpoint,
        result.status,
        result.body.get("error") or result.body.get("status"),
        exc_info=True,
    )
    return result


def _querydict(data: Mapping[str, str]) -> QueryDict:
    query = QueryDict(mutable=True)
    for key, value in data.items():
        query[key] = "" if value is None else str(value)
    return query


def _sent_click_id(query: Mapping[str, str]) -> str:
    return (query.get("click_id") or query.get("cf_click_id") or "").strip()
