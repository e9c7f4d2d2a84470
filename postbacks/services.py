"""The delivery pipeline: plan deliveries with the event, move them through their states.

1. ``deliveries_plan`` runs inside the event's transaction and writes one Delivery per
   matching rule (a transactional outbox: a broker outage loses nothing), then wakes a
   dispatcher on commit (``wake``: a Celery message that carries no delivery).
2. ``postbacks.dispatcher`` claims due deliveries in batches, sends them concurrently and
   records each attempt; ``next_state`` is the state machine it applies.
3. Retryable failures wait ``retry_delay`` seconds in the database; ``deliveries_sweep``
   (each worker process's maintenance thread) wakes a dispatcher when something is due and
   takes back deliveries whose worker died mid-attempt.

Delivery is at least once: every attempt of a delivery carries the same delivery ID.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from postbacks import metrics, wakeup
from postbacks.matching import Scope
from postbacks.models import (
    Attempt,
    Delivery,
    EventType,
    PostbackRule,
    Trigger,
    Worker,
)
from postbacks.signing import new_secret
from postbacks.transports import Outcome, Result, get_transport
from tracker import currency, db, rows
from tracker.macros import CATALOGUE, build_context, format_value
from tracker.models import Click, Conversion, Impression

logger = logging.getLogger(__name__)
JITTER = 0.2
LOST_WORKER_ERROR = "Worker lost during the attempt (lease expired); the outcome is unknown."


_rules_cache: dict[str, tuple[float, list[PostbackRule]]] = {}
# Every spelling of the macros a rule's payout currency changes ({revenue}, {currency}...).
_PAYOUT_SPELLINGS = tuple(s for s, m in CATALOGUE.items() if m.name == "payout")
_CURRENCY_SPELLINGS = tuple(s for s, m in CATALOGUE.items() if m.name == "payout_currency")


def rules_for(event_type: str) -> list[PostbackRule]:
    """Active rules of one event type, with their scope ids prefetched.

    Kept per process for ``POSTBACKS_RULES_CACHE_SECONDS`` (the click and conversion hot
    paths would otherwise spend five queries on it); a rule saved or deleted in this
    process clears the cache at once (see ``PostbacksConfig.ready``).
    """
    now = time.monotonic()
    cached = _rules_cache.get(event_type)
    if cached and now - cached[0] < settings.POSTBACKS_RULES_CACHE_SECONDS:
        return cached[1]
    rules = list(
        PostbackRule.objects.filter(is_active=True, event_type=event_type).prefetch_related(
            "campaigns", "offers", "traffic_sources", "affiliate_networks", "rejection_reasons"
        )
    )
    _rules_cache[event_type] = (now, rules)
    return rules


def rules_cache_clear(**kwargs: object) -> None:
    """Forget the cached rules (a signal receiver: takes and ignores signal arguments)."""
    _rules_cache.clear()


def payout_in(payout: Decimal | None, source: str, target: str) -> tuple[dict[str, str], list[str]]:
    """The macro values that send ``payout`` (of currency ``source``) in ``target``:
    ``({"payout": ..., "revenue": ..., "payout_currency": target, ...}, [])``, converted with
    the exchange rates of now (``tracker.currency.convert``).

    Without a rate for either currency: ``({}, [the codes lacking a rate])``, and the
    payout goes out unconverted, in ``source`` (also ``({}, [])`` for an amount too large
    to convert). Nothing to do (no target, same currency, no payout): ``({}, [])``.
    """
    if not target or target == source or payout is None:
        return {}, []
    converted = currency.convert(payout, source, target)
    if converted is None:
        return {}, currency.missing_rates(source, target)
    text = format_value(converted)
    values = dict.fromkeys(_PAYOUT_SPELLINGS, text)
    values.update(dict.fromkeys(_CURRENCY_SPELLINGS, target))
    return values, []


def unconverted_note(source: str, target: str, missing: list[str]) -> str:
    """The delivery's note when a rule's payout currency could not be applied, e.g.
    ``payout sent in USD: no EUR rate``."""
    if not source:
        return f"payout sent unconverted, not in {target}: the conversion has no currency"
    if not missing:
        return f"payout sent in {source}: out of range in {target}"
    return f"payout sent in {source}: no {' or '.join(missing)} rate"


def scope_of(click: Click | Impression) -> Scope:
    """The campaign, offer, traffic source and network an event belongs to."""
    offer = getattr(click, "offer", None)
    return Scope(
        campaign_id=click.campaign_id,
        offer_id=getattr(click, "offer_id", None),
        traffic_source_id=click.traffic_source_id,
        affiliate_network_id=offer.affiliate_network_id if offer else None,
    )


def _without_replaced_globals(rules: list[PostbackRule]) -> list[PostbackRule]:
    """Drop the global rules of a type when a matching scoped rule of that type replaces them."""
    replacing = {r.event_type for r in rules if r.replaces_global and not r.is_global}
    return [r for r in rules if not (r.event_type in replacing and r.is_global)]


def deliveries_plan(
    *,
    event_type: str,
    click: Click | None = None,
    conversion: Conversion | None = None,
    impression: Impression | None = None,
    trigger: str = Trigger.CREATED,
    previous_status: str = "",
    is_first: bool = True,
    version: str = "1",
    event_detail: str = "",
) -> list[Delivery]:
    """Write one scheduled Delivery per matching active rule; wake a dispatcher on commit.

    Call inside the transaction that writes the event. ``event_type`` is the event written:
    impression, click or conversion; a conversion also fires the *event* rules when it is not
    the click's first (``is_first``). ``trigger``: ``created`` or ``changed`` (a status
    change, with ``previous_status``). ``version`` makes each firing of a rule for one event
    unique (``1`` when created, the status change's id after). The request is rendered
    now, so it carries the macro values of this moment and its stable delivery ID
    (``{delivery.id}``, ``Idempotency-Key``). A rule whose payout currency differs from
    the conversion's gets ``{payout}`` converted at the rates of now (:func:`payout_in`);
    without a rate it is sent unconverted and the delivery's ``event_detail`` says so.
    Returns the deliveries created.
    """
    subject = impression or click
    status = conversion.status if conversion else ""
    conversion_type = conversion.conversion_type if conversion else ""
    reason = conversion.rejection_reason if conversion else ""
    candidates = list(rules_for(event_type))
    if event_type == EventType.CONVERSION and not is_first:
        candidates += rules_for(EventType.EVENT)
    if not candidates:
        return []
    if subject is None:
        raise ValueError("deliveries_plan needs a click or an impression")
    scope = scope_of(subject)
    rules = [
        r
        for r in candidates
        if r.matches(
            scope,
            status,
            conversion_type,
            rejection_reason=reason,
            trigger=trigger,
            is_first=is_first,
        )
    ]
    rules = _without_replaced_globals(rules)
    if not rules:
        return []
    context = build_context(
        click,
        conversion,
        impression=impression,
        event_type=event_type if is_first else EventType.EVENT,
        previous_status=previous_status,
    )
    now = timezone.now()
    subject_key = conversion.pk if conversion else subject.pk
    if not event_detail:
        event_detail = (
            f"status {previous_status} -> {status}"
            if trigger == Trigger.CHANGED
            else f"created {status}".strip()
        )
    deliveries = []
    # Payout currency -> (macro values, note), once per currency: rules share the context
    # and only a rule with another payout currency gets a copy of its own.
    payouts: dict[str, tuple[dict[str, str], str]] = {}
    for rule in rules:
        public_id = uuid.uuid4()
        context["delivery.id"] = str(public_id)
        context["event.type"] = rule.event_type
        rule_context, detail = context, event_detail
        target = rule.payout_currency
        if target and conversion is not None and target != conversion.currency:
            if target not in payouts:
                values, missing = payout_in(conversion.payout, conversion.currency, target)
                note = "" if values else unconverted_note(conversion.currency, target, missing)
                payouts[target] = values, note
            values, note = payouts[target]
            if values:
                rule_context = {**context, **values}
            if note:
                detail = f"{event_detail[: 198 - len(note)]}; {note}" if event_detail else note
        prepared = get_transport(rule.kind).prepare(rule, rule_context)
        deliveries.append(
            Delivery.planned(
                rule,
                prepared,
                public_id=public_id,
                due_at=now + timedelta(seconds=rule.delay_seconds),
                idempotency_key=f"{rule.pk}:{event_type}:{subject_key}:{version}",
                event_detail=detail,
                click=click,
                conversion=conversion,
                impression=impression,
                traffic_source_id=subject.traffic_source_id,
                is_test=bool(conversion and conversion.is_test),
            )
        )
    rows.insert(deliveries)  # one INSERT built once per process: no ORM compiling
    first_delay = min(rule.delay_seconds for rule in rules)
    if first_delay <= settings.POSTBACKS_COUNTDOWN_MAX_SECONDS:
        transaction.on_commit(lambda: wake(first_delay))
    return deliveries


def deliveries_cancel_obsolete(conversion: Conversion, *, is_first: bool) -> int:
    """Cancel the waiting deliveries of ``conversion`` whose *delayed* rule no longer fires
    for its new status (or reason): a delay "awaiting fraud checks" ends here when the lead
    is rejected.

    A rule without a delay is not awaiting anything: its delivery matched the event it was
    planned for and is sent (or retried) whatever the conversion becomes next, so that
    whether a traffic source hears of a rejection never depends on how fast a worker was.
    Each cancelled delivery's ``last_error`` says why. Returns how many were cancelled.
    """
    waiting = list(
        Delivery.objects.waiting()
        .filter(conversion=conversion, rule__delay_seconds__gt=0, is_test=False)
        .select_related("rule")
        .prefetch_related("rule__rejection_reasons")
    )
    obsolete: dict[str, list[int]] = {}
    for delivery in waiting:
        rule = delivery.rule
        if rule.accepts(
            status=conversion.status,
            conversion_type=conversion.conversion_type,
            rejection_reason=conversion.rejection_reason,
            is_first=is_first,
        ):
            continue
        fires_on = ", ".join(rule.statuses) or "any status"
        reason = conversion.rejection_reason
        why = (
            f"the conversion changed to {conversion.status}"
            f"{f' ({reason})' if reason else ''} before sending; rule '{rule.name}' fires on "
            f"{fires_on}."
        )
        obsolete.setdefault(why, []).append(delivery.pk)
    return sum(Delivery.objects.filter(pk__in=ids).cancel(why) for why, ids in obsolete.items())


def rules_waiting_count(rule_ids: Iterable[int]) -> int:
    """Scheduled (not yet sent, or between retries) deliveries of these rules."""
    return Delivery.objects.waiting().filter(rule_id__in=list(rule_ids)).count()


def rules_deactivate(
    rule_ids: Iterable[int], reason: str = "the rule was deactivated.", *, by: str = ""
) -> int:
    """Deactivate these rules and cancel their waiting deliveries; returns how many were
    cancelled. ``reason`` and ``by`` (who: e.g. "alice (admin)") go to each cancelled
    delivery's ``last_error`` (see ``DeliveryQuerySet.cancel``)."""
    ids = list(rule_ids)
    with transaction.atomic():
        PostbackRule.objects.filter(pk__in=ids, is_active=True).update(
            is_active=False, updated_at=timezone.now()
        )
        count = Delivery.objects.filter(rule_id__in=ids).cancel(reason, by=by)
    rules_cache_clear()
    return count


def rules_enable(rule_ids: Iterable[int]) -> int:
    """Switch these rules back on; their failure streak and attention banner start afresh.
    Returns how many were off."""
    count = PostbackRule.objects.filter(pk__in=list(rule_ids), is_active=False).update(
        is_active=True, needs_attention=False, consecutive_failures=0, updated_at=timezone.now()
    )
    rules_cache_clear()
    return count


def rules_acknowledge(rule_ids: Iterable[int]) -> int:
    """Hide the auto-disable banner of these rules (they stay off); returns how many."""
    return PostbackRule.objects.filter(pk__in=list(rule_ids), needs_attention=True).update(
        needs_attention=False
    )


def rotate_signing_secret(rule: PostbackRule, grace_hours: float | None = None) -> str:
    """Give ``rule`` a new signing secret and return it (the one time it is shown).

    The secret it had stays valid for ``grace_hours`` (``POSTBACKS_SIGNING_GRACE_HOURS``,
    24 by default; 0 drops it at once): requests carry both signatures meanwhile, so the
    receiver can switch without refusing any. Saves the three signing fields only."""
    hours = settings.POSTBACKS_SIGNING_GRACE_HOURS if grace_hours is None else grace_hours
    if rule.signing_secret and hours > 0:
        rule.previous_signing_secret = rule.signing_secret
        rule.previous_secret_expires_at = timezone.now() + timedelta(hours=hours)
    else:
        rule.previous_signing_secret, rule.previous_secret_expires_at = "", None
    rule.signing_secret = new_secret()
    rule.save(
        update_fields=[
            "signing_secret", "previous_signing_secret", "previous_secret_expires_at",
            "updated_at",
        ]
    )  # fmt: skip
    return rule.signing_secret


def stop_signing(rule: PostbackRule) -> None:
    """Drop ``rule``'s signing secrets (current and previous): its requests go unsigned."""
    rule.signing_secret = rule.previous_signing_secret = ""
    rule.previous_secret_expires_at = None
    rule.save(
        update_fields=[
            "signing_secret", "previous_signing_secret", "previous_secret_expires_at",
            "updated_at",
        ]
    )  # fmt: skip


class _DispatchTask(Protocol):
    def apply_async(self, *, countdown: float | None, expires: float) -> object: ...


_dispatch_task: _DispatchTask | None = None


def use_dispatch_task(task: _DispatchTask) -> None:
    """Set the Celery task :func:`wake` publishes (``postbacks.apps`` passes
    ``postbacks.tasks.dispatch_task``): the tasks and the dispatcher import this module,
    not the reverse."""
    global _dispatch_task
    _dispatch_task = task


def wake(countdown: float = 0, *, coalesce: bool = True) -> bool:
    """Wake a dispatcher now, or after ``countdown`` seconds; True if one was or is woken.

    The message carries no delivery: the dispatcher claims whatever is due. An immediate
    wake-up is coalesced (:mod:`postbacks.wakeup`): while a dispatcher is already woken,
    nothing is published. ``coalesce=False`` publishes anyway (a busy dispatcher calling
    an idle one to share a backlog). A broker failure is logged, not raised: the deliveries
    wait in the database and the sweeper wakes a dispatcher within
    ``POSTBACKS_SWEEP_SECONDS`` once the broker is back. Raises RuntimeError before the
    app's ``ready()`` set the task (:func:`use_dispatch_task`).
    """
    if _dispatch_task is None:
        raise RuntimeError("No dispatch task: postbacks.apps sets it in ready().")
    if countdown <= 0 and coalesce and not wakeup.flag_raise():
        return True
    try:
        _dispatch_task.apply_async(
            countdown=countdown or None,
            expires=countdown + settings.POSTBACKS_WAKE_EXPIRES_SECONDS,
        )
    except Exception:
        logger.warning("Broker unavailable; the sweeper will wake a dispatcher.", exc_info=True)
        return False
    return True


def retry_delay(attempt_number: int, base_seconds: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt_number`` (1-based).

    ``base_seconds * 2**(attempt_number - 1)`` with ±20% jitter, at least the destination's
    Retry-After when it sent one, never more than ``POSTBACKS_BACKOFF_MAX_SECONDS``.
    With base 60: about 1, 2, 4, 8, 16, 32 min, 1 h 4 min, 2 h 8 min, 4 h 16 min.
    """
    cap = settings.POSTBACKS_BACKOFF_MAX_SECONDS
    delay: float = get_exponential_backoff_interval(
        factor=base_seconds, retries=attempt_number - 1, maximum=cap
    )
    delay *= random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after:
        delay = max(delay, retry_after)
    return min(delay, cap)


@dataclass(frozen=True)
class Transition:
    """Where one attempt's result takes a delivery: the Attempt's outcome and new fields."""

    outcome: Outcome
    status: str
    error: str
    due_at: datetime | None = None
    delivered_at: datetime | None = None


def next_state(
    *,
    attempt_number: int,
    max_attempts: int,
    retry_base_seconds: int,
    result: Result,
    now: datetime,
) -> Transition:
    """The delivery state machine, as a pure function of one attempt's result.

    delivered -> ``delivered``; failed -> ``failed``; retry -> ``scheduled`` again after
    :func:`retry_delay`, or ``failed`` once ``attempt_number`` reaches ``max_attempts``.
    """
    if result.outcome == Outcome.DELIVERED:
        return Transition(Outcome.DELIVERED, Delivery.Status.DELIVERED, "", delivered_at=now)
    if result.outcome == Outcome.FAILED:
        return Transition(Outcome.FAILED, Delivery.Status.FAILED, result.error)
    if attempt_number >= max_attempts:
        error = f"{result.error} (gave up after {attempt_number} attempts)"
        return Transition(Outcome.FAILED, Delivery.Status.FAILED, error)
    wait = retry_delay(attempt_number, retry_base_seconds, result.retry_after)
    return Transition(
        Outcome.RETRY, Delivery.Status.SCHEDULED, result.error, due_at=now + timedelta(seconds=wait)
    )


def live_workers(now: datetime) -> list[str]:
    """Names of dispatcher processes whose heartbeat is recent enough."""
    horizon = now - timedelta(seconds=settings.POSTBACKS_WORKER_DEAD_SECONDS)
    return list(Worker.objects.filter(heartbeat_at__gte=horizon).values_list("name", flat=True))


def deliveries_reclaim(limit: int = 5000) -> int:
    """Put deliveries whose worker died mid-attempt back in the schedule.

    A delivery is taken back when its lease expired or its worker stopped beating for
    ``POSTBACKS_WORKER_DEAD_SECONDS``. The lost attempt is logged and counts toward
    ``max_attempts``; the worker, should it still answer late, no longer owns the delivery
    and its result is dropped. Returns how many were reclaimed.
    """
    now = timezone.now()
    stuck = list(Delivery.objects.stuck(now, live_workers(now))[:limit])
    reclaimed = 0
    for delivery in stuck:
        exhausted = delivery.attempt_count >= delivery.max_attempts
        with transaction.atomic():
            updated = Delivery.objects.filter(
                pk=delivery.pk,
                status=Delivery.Status.SENDING,
                attempt_count=delivery.attempt_count,
                claimed_by=delivery.claimed_by,
            ).update(
                status=Delivery.Status.FAILED if exhausted else Delivery.Status.SCHEDULED,
                due_at=now,
                lease_expires_at=None,
                claimed_by="",
                last_error=LOST_WORKER_ERROR,
                updated_at=now,
            )
            if updated:
                Attempt.logged(
                    delivery_id=delivery.pk,
                    number=delivery.attempt_count,
                    started_at=delivery.updated_at,
                    method=delivery.method,
                    url=delivery.url,
                    outcome=Outcome.FAILED if exhausted else Outcome.RETRY,
                    error=LOST_WORKER_ERROR,
                ).save(force_insert=True)
                reclaimed += 1
                logger.warning(
                    "Postback %s attempt %d: taken back from lost worker %s%s",
                    delivery.public_id, delivery.attempt_count, delivery.claimed_by or "?",
                    " (attempts exhausted: failed)" if exhausted else "",
                )  # fmt: skip
    if reclaimed:
        metrics.RECLAIMED.inc(reclaimed)
        logger.warning("Reclaimed %d postback(s) from a lost worker.", reclaimed)
    return reclaimed


# The advisory lock one sweep holds while it runs (tracker.db.single_run_in_transaction).
SWEEP_LOCK = "postbacks.sweep"


def deliveries_sweep(limit: int = 5000) -> dict[str, int]:
    """Reclaim stuck deliveries, then wake a dispatcher if any delivery is due.

    Run by every worker process's maintenance thread every ``POSTBACKS_SWEEP_SECONDS``, on
    every host (beat plays no part): a lost wake-up, a failed publish, a long delay or a
    killed worker ends in a postback at most one period late, as long as one worker is
    alive. One sweep runs at a time: the first to take the advisory lock sweeps, in one
    transaction, and the others skip their turn (each reclaim is a conditional UPDATE as
    well, so even two sweeps could not take one delivery back twice). The wake-up is
    published after the commit.
    Returns counts: ``{"reclaimed": n, "due": 0 or 1, "woken": 0 or 1, "skipped": 0 or 1}``.
    """
    with transaction.atomic():
        if not db.single_run_in_transaction(SWEEP_LOCK):
            return {"reclaimed": 0, "due": 0, "woken": 0, "skipped": 1}
        reclaimed = deliveries_reclaim(limit)
        now = timezone.now()
        Worker.objects.filter(heartbeat_at__lt=now - timedelta(days=1)).delete()
        due = Delivery.objects.due(now).exists()
    woken = wake() if due else False
    return {"reclaimed": reclaimed, "due": int(due), "woken": int(woken), "skipped": 0}


# What deliveries_retry_now schedules again: finished without success, or still waiting.
REPLAYABLE_STATUSES = frozenset(
    {Delivery.Status.FAILED, Delivery.Status.CANCELLED, Delivery.Status.SCHEDULED}
)


def deliveries_retry_now(deliveries: Iterable[Delivery]) -> int:
    """Schedule failed, cancelled or waiting deliveries for one more attempt right away.

    A failed or cancelled delivery gets one extra attempt (and its usual retries if that one fails
    with a retryable error are not added). Delivered and in-flight ones are left alone.
    Returns how many were scheduled.
    """
    now = timezone.now()
    count = 0
    for delivery in deliveries:
        if delivery.status not in REPLAYABLE_STATUSES:
            continue
        count += Delivery.objects.filter(pk=delivery.pk, status=delivery.status).update(
            status=Delivery.Status.SCHEDULED,
            due_at=now,
            max_attempts=max(delivery.max_attempts, delivery.attempt_count + 1),
            updated_at=now,
        )
    if count:
        transaction.on_commit(wake)
    return count


MANUAL_CANCEL_REASON = "no further attempt will be made."


def deliveries_cancel(
    deliveries: Iterable[Delivery], *, by: str, reason: str = MANUAL_CANCEL_REASON
) -> int:
    """Cancel deliveries still waiting for an attempt, by hand; returns how many were
    cancelled. ``by``: who, e.g. "alice (admin)"; recorded with ``reason`` in each one's
    ``last_error`` (see ``DeliveryQuerySet.cancel``)."""
    ids = [d.pk for d in deliveries]
    return Delivery.objects.filter(pk__in=ids).cancel(reason, by=by)
