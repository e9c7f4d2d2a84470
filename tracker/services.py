"""Recording clicks and conversions; each write plans its postbacks in the same transaction."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.db import connections, router, transaction
from django.utils import timezone

from campaigns import services as campaign_cache
from campaigns.models import Campaign, Offer
from tracker import clickbuffer, db, enrichment, macros, metrics, rows
from tracker import currency as currencies
from tracker.events import EventType, Trigger
from tracker.models import (
    EXTERNAL_ID_MAX,
    Click,
    Conversion,
    ConversionStatusChange,
    Impression,
    RejectionReason,
)

logger = logging.getLogger(__name__)
VAR_MAX = 255


class Planner(Protocol):
    """What plans the postbacks of an event in the event's own transaction (the postbacks
    app's ``postbacks.services``, set in its ``ready()``): the tracker records events and
    names them, and imports nothing of the layer that acts on them."""

    def rules_for(self, event_type: str) -> Sequence[object]: ...

    def deliveries_plan(
        self,
        *,
        event_type: str,
        click: Click | None = ...,
        conversion: Conversion | None = ...,
        impression: Impression | None = ...,
        trigger: str = ...,
        previous_status: str = ...,
        is_first: bool = ...,
        version: str = ...,
        event_detail: str = ...,
    ) -> object: ...

    def deliveries_cancel_obsolete(self, conversion: Conversion, *, is_first: bool) -> int: ...


_planner: Planner | None = None


def use_planner(planner: Planner) -> None:
    """Set what plans the postbacks of the events recorded here (:class:`Planner`)."""
    global _planner
    _planner = planner


def _the_planner() -> Planner:
    if _planner is None:
        raise RuntimeError("No postback planner: postbacks.apps sets it in ready().")
    return _planner


def rules_for(event_type: str) -> Sequence[object]:
    """The active rules of ``event_type`` (cached by the planner); empty: nothing to plan.
    Raises RuntimeError before the postbacks app is ready (:func:`use_planner`)."""
    return _the_planner().rules_for(event_type)


def deliveries_plan(**kwargs: Any) -> object:
    """Plan the postbacks of an event (``event_type``, ``click``, ``conversion``,
    ``impression``, ``trigger``, ``previous_status``, ``is_first``, ``version``), in the
    caller's transaction: ``postbacks.services.deliveries_plan``. Raises RuntimeError before
    the postbacks app is ready (:func:`use_planner`), DatabaseError as the planner does."""
    return _the_planner().deliveries_plan(**kwargs)


def deliveries_cancel_obsolete(conversion: Conversion, *, is_first: bool) -> int:
    """Cancel the waiting deliveries of ``conversion`` its new status no longer fires;
    returns how many (``postbacks.services.deliveries_cancel_obsolete``)."""
    return _the_planner().deliveries_cancel_obsolete(conversion, is_first=is_first)


def storable(text: str) -> str:
    """``text`` without what a UTF-8 text column refuses: NUL bytes are removed and lone
    surrogates replaced by ``?``. Used for what is recorded as sent (user agents, referrers,
    click parameters, the inbound log), where refusing the request would lose more."""
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "") if "\x00" in text else text


def campaign_for_click(key: str) -> Campaign | None:
    """The active campaign with this key, with what a click needs loaded; cached per process
    (see :mod:`campaigns.services`). Read-only."""
    return campaign_cache.campaign_for_click(key)


class ExternalIdTooLong(ValueError):
    """The external ID in a click or impression URL is longer than ``EXTERNAL_ID_MAX``
    characters. Raised before anything is written; ``/c`` and ``/i`` answer 400
    ``external_id_too_long``. ``length``: the characters sent, ``param``: its parameter."""

    def __init__(self, param: str, length: int) -> None:
        super().__init__(
            f"The external ID ({param}) has {length} characters; at most {EXTERNAL_ID_MAX} "
            "are kept, and a cut ID would never match at the traffic source."
        )
        self.param, self.length = param, length


def _param_value(
    query: Mapping[str, str], name: str, placeholder: str, limit: int, *, refuse: bool = False
) -> str:
    """The value of query parameter ``name``, stripped and storable (see :func:`storable`);
    "" when missing or still the traffic source's unfilled ``placeholder``.

    Over ``limit`` characters: cut to ``limit`` (var1..var10, 255: a custom variable is
    reporting data, and a cut one still reports), or, with ``refuse``, ExternalIdTooLong
    (the external ID: a cut ID would be postbacked to the traffic source and never match).
    """
    value = storable(query.get(name) or "").strip()
    # A placeholder the traffic source did not fill in carries no information.
    if placeholder and value == placeholder:
        return ""
    if len(value) > limit:
        if refuse:
            raise ExternalIdTooLong(name, len(value))
        return value[:limit]
    return value


_Visit = TypeVar("_Visit", Click, Impression)


def _visit(
    model: type[_Visit],
    campaign: Campaign,
    query: Mapping[str, str],
    *,
    ip: str | None,
    user_agent: str,
    referrer: str,
    accept_language: str = "",
    **fields: object,
) -> _Visit:
    """An unsaved click or impression: the external ID and var1..var10 read from ``query``
    per the traffic source's parameter names, NUL bytes dropped from recorded text. A click
    of a campaign with an active lander records that lander.

    Raises ExternalIdTooLong (nothing written) for an external ID over ``EXTERNAL_ID_MAX``
    characters; var1..var10 are cut at 255 (see :func:`_param_value`).
    """
    source = campaign.traffic_source
    if model is Click and "lander" not in fields:
        lander = campaign.lander if campaign.lander_id else None
        fields["lander"] = lander if lander is not None and lander.is_active else None
    visit = model(
        campaign=campaign,
        traffic_source=source,
        external_id=_param_value(
            query,
            source.external_id_param,
            source.external_id_placeholder,
            EXTERNAL_ID_MAX,
            refuse=True,
        ),
        user_agent=storable(user_agent),
        referrer=storable(referrer),
        **enrichment.visit_fields(ip, user_agent, accept_language, referrer),
        **fields,
    )
    for param in source.parameters.all():
        if param.is_enabled:
            value = _param_value(query, param.param, param.placeholder, VAR_MAX)
            setattr(visit, f"var{param.slot}", value)
    return visit


def click_record(
    campaign: Campaign,
    offer: Offer,
    query: Mapping[str, str],
    *,
    ip: str | None,
    user_agent: str,
    referrer: str,
    accept_language: str = "",
) -> tuple[Click, str]:
    """Record a click and plan click postbacks; returns it with the offer URL to redirect to.

    ``query``: the campaign URL's query parameters; the external ID and var1..var10 are
    read from it per the traffic source's parameter names. ``ip`` must be a valid IPv4/IPv6
    address or None. NUL bytes are dropped from every recorded text. Without click rules
    this is one autocommit INSERT; with them, the click and its deliveries are written in
    one transaction. When PostgreSQL drops the connection meanwhile, the click is saved
    once more on a fresh connection unless it was written (see :mod:`tracker.db`).
    """
    click = _visit(
        Click,
        campaign,
        query,
        ip=ip,
        user_agent=user_agent,
        referrer=referrer,
        accept_language=accept_language,
        offer=offer,
    )
    if clickbuffer.enabled():
        click.created_at = timezone.now()
        clickbuffer.push(click)  # written by a worker (tracker/clickbuffer.py)
        metrics.CLICKS.inc()
        offer_url = macros.render(offer.url, macros.build_context(click))
        return click, offer_url
    for reconnects in range(db.RECONNECTS + 1):
        try:
            if reconnects and Click.objects.filter(pk=click.pk).exists():
                logger.warning("Click %s written although the connection broke.", click.pk)
            else:
                _click_save(click)
            break
        except db.CONNECTION_ERRORS as exc:
            # The connection was dropped (failover, restart): the click ID, made here, is
            # the row's key, so the database tells whether the click was written before it
            # broke (even when COMMIT's answer was lost), and saving again cannot make two.
            if not db.reconnect(exc, reconnects):
                raise
            logger.warning("Click %s retried on a fresh connection: %s", click.pk, exc)
    metrics.CLICKS.inc()
    offer_url = macros.render(offer.url, macros.build_context(click))
    return click, offer_url


def click_plan(click: Click) -> None:
    """Plan the click postbacks of a click being stored, in the caller's transaction
    (nothing without click rules)."""
    if rules_for(EventType.CLICK):
        deliveries_plan(event_type=EventType.CLICK, click=click)


def click_buffered(click_id: uuid.UUID | str) -> bool:
    """Store the click with this ID now if the click buffer still holds it (with its click
    postbacks, in the caller's transaction); True when it is in the table now."""
    return clickbuffer.flush_one(click_id, click_plan)


def _click_save(click: Click) -> None:
    if rules_for(EventType.CLICK):
        with transaction.atomic():
            click.save(force_insert=True)
            deliveries_plan(event_type=EventType.CLICK, click=click)
    else:
        # No click rule (the cached rules deliveries_plan would read): nothing to plan, and
        # an autocommit INSERT is one round trip instead of BEGIN, INSERT, COMMIT.
        click.save(force_insert=True)


def impression_record(
    campaign: Campaign,
    query: Mapping[str, str],
    *,
    ip: str | None,
    user_agent: str,
    referrer: str,
    accept_language: str = "",
) -> Impression:
    """Record an ad view and plan impression postbacks (one transaction when rules exist).

    ``query``: the pixel URL's query parameters, read like a click's (external ID and
    var1..var10 per the traffic source's parameter names). ``ip``: a valid address or None.
    """
    impression = _visit(
        Impression,
        campaign,
        query,
        ip=ip,
        user_agent=user_agent,
        referrer=referrer,
        accept_language=accept_language,
    )
    if rules_for(EventType.IMPRESSION):
        with transaction.atomic():
            impression.save(force_insert=True)
            deliveries_plan(event_type=EventType.IMPRESSION, impression=impression)
    else:
        impression.save(force_insert=True)
    return impression


def dedup_key(txid: str, conversion_type: str = "", *, several: bool = False) -> str:
    """The deduplication key of a conversion (unique per click): ``t:<txid>`` when a txid was
    sent; otherwise ``m:<random>`` when several conversions of the type are allowed
    (``several``), else ``c:<conversion type>``."""
    if txid:
        return f"t:{txid}"
    if several:
        return f"m:{uuid.uuid4().hex}"
    return f"c:{conversion_type.strip().lower()}"


_CLICK_LOOKUP: dict[str, str] = {}


def _click_lookup_sql(using: str) -> str:
    """The click's columns, the id of its conversion with a dedup key, and whether it has
    any conversion: one SELECT with two index probes of the conversion table (its unique
    ``(click_id, dedup_key)``). Parameters: the dedup key, the click ID."""
    if using not in _CLICK_LOOKUP:
        click, conversion = Click._meta.db_table, Conversion._meta.db_table
        _CLICK_LOOKUP[using] = (
            f"SELECT {rows.columns(Click, 'c', using)}, "
            f"(SELECT v.id FROM {conversion} v WHERE v.click_id = c.id AND v.dedup_key = %s "
            "LIMIT 1), "
            f"EXISTS(SELECT 1 FROM {conversion} v WHERE v.click_id = c.id) "
            f"FROM {click} c WHERE c.id = %s"
        )
    return _CLICK_LOOKUP[using]


def click_for_conversion(click_id: uuid.UUID, key: str) -> tuple[Click | None, int | None, bool]:
    """The click with its offer and the offer's network, the id of its existing conversion
    with this dedup ``key`` (see :func:`dedup_key`; None when there is none), and whether
    the click already has any conversion; ``(None, None, False)`` for an unknown click ID.

    One SELECT, built once (:mod:`tracker.rows`: the ORM's compiling of it cost more than
    PostgreSQL's running it); the traffic source, its parameters, the offer and its network
    come from the per-process cache (``campaigns.services``).
    Run it in the transaction that registers the conversion.
    """
    using = router.db_for_read(Click)
    connection = connections[using]
    with connection.cursor() as cursor:
        pk = Click._meta.pk.get_db_prep_value(click_id, connection)
        cursor.execute(_click_lookup_sql(using), [key, pk])
        row = cursor.fetchone()
        if row is None and click_buffered(click_id):
            cursor.execute(_click_lookup_sql(using), [key, pk])
            row = cursor.fetchone()
    if row is None:
        return None, None, False
    click = rows.instance(Click, row, using)
    existing_id, has_conversion = row[-2], bool(row[-1])
    source = campaign_cache.traffic_source(click.traffic_source_id)
    if source is not None:
        click.traffic_source = source
    if click.offer_id is not None:
        click.offer = campaign_cache.offer(click.offer_id)
    campaign = campaign_cache.campaign(click.campaign_id)
    if campaign is not None:
        click.campaign = campaign
    return click, existing_id, has_conversion


def rejection_reason_label(code: str) -> str | None:
    """The label of rejection reason ``code`` (any case): "" for no code, None when the code
    is not in the list."""
    if not code:
        return ""
    return (
        RejectionReason.objects.filter(code=code.strip().lower())
        .values_list("label", flat=True)
        .first()
    )


def conversion_create(
    click: Click,
    *,
    payout: Decimal | None,
    currency: str = "",
    txid: str = "",
    conversion_type: str = "",
    status: str = Conversion.Status.APPROVED,
    params: Mapping[str, str] | None = None,
    method: str = Conversion.Method.S2S,
    rejection_reason: str = "",
    is_first: bool = True,
    dedup: str = "",
    is_test: bool = False,
    converted_at: datetime | None = None,
) -> Conversion:
    """Insert a conversion for ``click`` and plan its postbacks, in the caller's transaction.

    Payout follows the offer: in manual mode the offer's payout and currency replace what
    the network sent; in automatic mode the network's payout is used, or the offer's when
    none was sent. ``is_first``: the click had no conversion before (later ones also fire
    *event* rules). ``rejection_reason``: a code, kept as received (lower-cased) and flagged
    when it is not in the rejection reason list. ``dedup``: the dedup key (default
    :func:`dedup_key` of txid and type). ``is_test``: a test conversion (its deliveries are
    test deliveries). ``converted_at``: when it happened (default now). The payout is also
    stored in the display currency at today's rate (``tracker.currency``). Raises
    IntegrityError when (click, dedup key) already exists: the caller's transaction is then
    unusable and must be rolled back (no savepoint is spent here).
    """
    rejection_reason = rejection_reason.strip().lower()
    offer = click.offer
    network_payout = payout
    if offer is not None and (offer.payout_mode == Offer.PayoutMode.MANUAL or payout is None):
        payout, currency = offer.payout, offer.currency
    currency = currency or (offer.currency if offer else settings.DEFAULT_CURRENCY)
    payout = payout if payout is not None else Decimal("0")
    display_payout, rate = currencies.to_display(payout, currency)
    conversion = Conversion(
        click=click,
        txid=txid,
        dedup_key=dedup or dedup_key(txid, conversion_type),
        conversion_type=conversion_type,
        status=status,
        payout=payout,
        currency=currency,
        display_payout=display_payout,
        display_currency=currencies.display_currency(),
        exchange_rate=rate,
        is_test=is_test,
        converted_at=converted_at or timezone.now(),
        network_payout=network_payout,
        params=dict(params or {}),
        method=method,
        rejection_reason=rejection_reason,
    )
    label = rejection_reason_label(rejection_reason)
    conversion.rejection_reason_unknown = label is None
    conversion.rejection_reason_label = label or ""  # for {rejection_reason.label}
    rows.insert([conversion])
    deliveries_plan(
        event_type=EventType.CONVERSION, click=click, conversion=conversion, is_first=is_first
    )
    return conversion


def conversion_is_first(conversion: Conversion) -> bool:
    """Whether no earlier conversion exists for the same click."""
    return not Conversion.objects.filter(
        click_id=conversion.click_id, pk__lt=conversion.pk
    ).exists()


@transaction.atomic
def conversion_status_change(
    conversion: Conversion,
    status: str,
    *,
    source: str,
    rejection_reason: str = "",
    user: Any = None,  # the signed-in user, anonymous or none
    note: str = "",
) -> ConversionStatusChange | None:
    """Move ``conversion`` to ``status`` (approved, pending, rejected, refunded) and fire.

    Locks the conversion row, records the change (old -> new, ``source``: postback, admin,
    api or upload; ``user`` for admin/API), cancels its waiting deliveries whose rule no
    longer fires for the new status, and plans the deliveries of the rules that fire on a
    status change to it. Returns None, changing nothing, when the status is already
    ``status`` (a duplicate). Raises ValueError for an unknown status. Atomic (a savepoint
    inside the caller's transaction).
    """
    if status not in Conversion.Status.values:
        raise ValueError(f"Unknown status {status!r}: use {', '.join(Conversion.Status.values)}.")
    locked = Conversion.objects.select_for_update().get(pk=conversion.pk)
    previous = locked.status
    if previous == status:
        return None
    reason = rejection_reason.strip().lower() if status == Conversion.Status.REJECTED else ""
    now = timezone.now()
    conversion.status = status
    conversion.rejection_reason = reason
    label = rejection_reason_label(reason)
    conversion.rejection_reason_unknown = label is None
    conversion.rejection_reason_label = label or ""  # for {rejection_reason.label}
    conversion.status_changed_at = now
    conversion.save(
        update_fields=[
            "status",
            "rejection_reason",
            "rejection_reason_unknown",
            "status_changed_at",
        ]
    )
    change = ConversionStatusChange.objects.create(
        conversion=conversion,
        old_status=previous,
        new_status=status,
        rejection_reason=reason,
        source=source,
        user=user if getattr(user, "pk", None) else None,
        note=storable(note)[:2000],
    )
    is_first = conversion_is_first(conversion)
    deliveries_cancel_obsolete(conversion, is_first=is_first)
    click = conversion.click
    deliveries_plan(
        event_type=EventType.CONVERSION,
        click=click,
        conversion=conversion,
        trigger=Trigger.CHANGED,
        previous_status=previous,
        is_first=is_first,
        version=f"s{change.pk}",
    )
    return change
