"""The delivery pipeline: plan deliveries with the event, send them, retry, sweep.

1. ``deliveries_plan`` runs inside the event's transaction and writes one Delivery per
   matching rule (a transactional outbox: a broker outage loses nothing).
2. After commit, due-soon deliveries are enqueued on the ``postbacks`` queue.
3. ``delivery_send`` claims a delivery with a conditional UPDATE, sends it through its
   transport and logs one Attempt per HTTP try.
4. Retryable failures wait ``retry_delay`` seconds: short waits are Celery countdowns,
   long ones stay in the database until ``deliveries_sweep`` (Celery beat) enqueues them.
   The sweeper also reclaims deliveries whose worker died mid-attempt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from datetime import timedelta

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from postbacks.macros import build_context
from postbacks.models import Attempt, Delivery, PostbackRule, Scope
from postbacks.transports import PreparedRequest, Result, get_transport, mask_url
from tracker.models import Click, Conversion

logger = logging.getLogger(__name__)
JITTER = 0.2
LOST_WORKER_ERROR = "Worker lost during the attempt (lease expired); the outcome is unknown."


_rules_cache: dict[str, tuple[float, list[PostbackRule]]] = {}


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
            "campaigns", "offers", "traffic_sources", "affiliate_networks"
        )
    )
    _rules_cache[event_type] = (now, rules)
    return rules


def rules_cache_clear(**kwargs: object) -> None:
    """Forget the cached rules (a signal receiver: takes and ignores signal arguments)."""
    _rules_cache.clear()


def scope_of(click: Click) -> Scope:
    offer = click.offer
    return Scope(
        campaign_id=click.campaign_id,
        offer_id=click.offer_id,
        traffic_source_id=click.traffic_source_id,
        affiliate_network_id=offer.affiliate_network_id if offer else None,
    )


def deliveries_plan(
    *, event_type: str, click: Click, conversion: Conversion | None = None
) -> list[Delivery]:
    """Write one scheduled Delivery per matching active rule; enqueue them on commit.

    Call inside the transaction that writes the event. The request is rendered now, so
    it carries the macro values of this moment. Returns the deliveries created.
    """
    status = conversion.status if conversion else ""
    conversion_type = conversion.conversion_type if conversion else ""
    scope = scope_of(click)
    rules = [r for r in rules_for(event_type) if r.matches(scope, status, conversion_type)]
    if not rules:
        return []
    context = build_context(click, conversion)
    now = timezone.now()
    event_key = f"{event_type}:{conversion.pk if conversion else click.pk}:1"
    deliveries = []
    for rule in rules:
        prepared = get_transport(rule.kind).prepare(rule.url_template, context)
        soon = rule.delay_seconds <= settings.POSTBACKS_COUNTDOWN_MAX_SECONDS
        deliveries.append(
            Delivery(
                rule=rule,
                event_type=event_type,
                click=click,
                conversion=conversion,
                traffic_source_id=click.traffic_source_id,
                idempotency_key=f"{rule.pk}:{event_key}",
                kind=rule.kind,
                method=prepared.method,
                url=prepared.url,
                body=prepared.body,
                headers=prepared.headers,
                due_at=now + timedelta(seconds=rule.delay_seconds),
                enqueued_at=now if soon else None,
                max_attempts=rule.max_attempts,
                retry_base_seconds=rule.retry_base_seconds,
                timeout_seconds=rule.timeout_seconds,
            )
        )
    Delivery.objects.bulk_create(deliveries)
    queued = [(d.pk, d.due_at) for d in deliveries if d.enqueued_at]
    transaction.on_commit(lambda: enqueue(queued))
    return deliveries


def enqueue(items: Iterable[tuple[int, object]]) -> int:
    """Send a delivery task per (delivery id, due_at); returns how many were sent.

    A broker failure is logged, not raised: the deliveries stay in the database and the
    sweeper enqueues them once the broker is back.
    """
    from postbacks.tasks import deliver_task

    now = timezone.now()
    sent = 0
    try:
        for pk, due_at in items:
            countdown = max(0.0, (due_at - now).total_seconds())
            deliver_task.apply_async((pk,), countdown=countdown or None)
            sent += 1
    except Exception:
        logger.warning("Broker unavailable; the sweeper will enqueue the rest.", exc_info=True)
    return sent


def retry_delay(attempt_number: int, base_seconds: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt_number`` (1-based).

    ``base_seconds * 2**(attempt_number - 1)`` with ±20% jitter, at least the destination's
    Retry-After when it sent one, never more than ``POSTBACKS_BACKOFF_MAX_SECONDS``.
    With base 60: about 1, 2, 4, 8, 16, 32 min, 1 h 4 min, 2 h 8 min, 4 h 16 min.
    """
    cap = settings.POSTBACKS_BACKOFF_MAX_SECONDS
    delay = get_exponential_backoff_interval(
        factor=base_seconds, retries=attempt_number - 1, maximum=cap
    )
    delay *= random.uniform(1 - JITTER, 1 + JITTER)
    if retry_after:
        delay = max(delay, retry_after)
    return min(delay, cap)


def delivery_send(delivery_id: int) -> str | None:
    """Claim one due delivery, send it, log the attempt; returns the outcome.

    Returns None when the delivery is not ours to send (already claimed, not due yet,
    finished or gone), which makes redelivered tasks harmless. The thread's database
    connection goes back to the pool during the HTTP request and at the end.
    """
    try:
        delivery = delivery_claim(delivery_id)
        if delivery is None:
            return None
        started_at = timezone.now()
        release_db_connection()
        request = PreparedRequest(delivery.method, delivery.url, delivery.body, delivery.headers)
        result = get_transport(delivery.kind).send(request, timeout=delivery.timeout_seconds)
        return delivery_record(delivery, result, started_at=started_at)
    finally:
        release_db_connection()


# now + (timeout + margin) seconds, per database: the lease of a claimed delivery.
LEASE_SQL = {
    "postgresql": "%s + make_interval(secs => timeout_seconds + %s)",
    "sqlite": "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s,"
    " '+' || (timeout_seconds + %s) || ' seconds')",
}
CLAIM_SQL = """
    UPDATE {table} SET status = 'sending', attempt_count = attempt_count + 1,
        lease_expires_at = {lease}, updated_at = %s
    WHERE id = %s AND status = 'scheduled' AND due_at <= %s
    RETURNING *
"""


def delivery_claim(delivery_id: int) -> Delivery | None:
    """Move a due, scheduled delivery to ``sending`` under a lease; None if not claimable.

    One conditional ``UPDATE ... RETURNING`` (PostgreSQL, SQLite >= 3.35) is the claim: of
    several workers holding the same task only one gets the row back. The lease lasts the
    delivery's timeout plus ``POSTBACKS_LEASE_MARGIN_SECONDS``.
    """
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    sql = CLAIM_SQL.format(table=Delivery._meta.db_table, lease=LEASE_SQL[connection.vendor])
    params = [now, settings.POSTBACKS_LEASE_MARGIN_SECONDS, now, delivery_id, now]
    return next(iter(Delivery.objects.raw(sql, params)), None)


def release_db_connection() -> None:
    """Hand the thread's database connection back (to the pool) while it waits on HTTP.

    Many threads wait on slow traffic sources at once; without this each would hold a
    database connection for the whole request.
    """
    if not connection.in_atomic_block:
        connection.close()


def delivery_record(delivery: Delivery, result: Result, *, started_at) -> str:
    """Write the Attempt and move the delivery on: delivered, rescheduled or failed."""
    number = delivery.attempt_count
    outcome = result.outcome
    error = result.error
    if outcome == Attempt.Outcome.RETRY and number >= delivery.max_attempts:
        outcome = Attempt.Outcome.FAILED
        error = f"{error} (gave up after {number} attempts)"
    now = timezone.now()
    fields: dict[str, object] = {
        "last_status_code": result.status_code,
        "last_error": error,
        "lease_expires_at": None,
        "updated_at": now,
    }
    requeue: list[tuple[int, object]] = []
    if outcome == Attempt.Outcome.DELIVERED:
        fields.update(status=Delivery.Status.DELIVERED, delivered_at=now)
    elif outcome == Attempt.Outcome.FAILED:
        fields.update(status=Delivery.Status.FAILED)
    else:
        wait = retry_delay(number, delivery.retry_base_seconds, result.retry_after)
        due_at = now + timedelta(seconds=wait)
        soon = wait <= settings.POSTBACKS_COUNTDOWN_MAX_SECONDS
        fields.update(status=Delivery.Status.SCHEDULED, due_at=due_at)
        fields["enqueued_at"] = now if soon else None
        if soon:
            requeue.append((delivery.pk, due_at))
    with transaction.atomic():
        Attempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=started_at,
            method=delivery.method,
            url=mask_url(delivery.url),
            status_code=result.status_code,
            response_body=result.response_body,
            error=error,
            duration_ms=result.duration_ms,
            outcome=outcome,
        )
        Delivery.objects.filter(
            pk=delivery.pk, status=Delivery.Status.SENDING, attempt_count=number
        ).update(**fields)
        if requeue:
            transaction.on_commit(lambda: enqueue(requeue))
    logger.info(
        "Postback %s attempt %d: %s %s -> %s in %d ms",
        delivery.pk, number, outcome, mask_url(delivery.url),
        result.status_code or error, result.duration_ms,
    )  # fmt: skip
    return outcome


def deliveries_reclaim(limit: int = 5000) -> int:
    """Put deliveries stuck in ``sending`` past their lease back in the schedule.

    Their worker died mid-attempt: the attempt is logged as lost and counts toward
    ``max_attempts``. Returns how many were reclaimed.
    """
    now = timezone.now()
    stuck = Delivery.objects.filter(status=Delivery.Status.SENDING, lease_expires_at__lt=now)
    reclaimed = 0
    for delivery in stuck[:limit]:
        exhausted = delivery.attempt_count >= delivery.max_attempts
        with transaction.atomic():
            updated = Delivery.objects.filter(
                pk=delivery.pk,
                status=Delivery.Status.SENDING,
                attempt_count=delivery.attempt_count,
            ).update(
                status=Delivery.Status.FAILED if exhausted else Delivery.Status.SCHEDULED,
                due_at=now,
                enqueued_at=None,
                lease_expires_at=None,
                last_error=LOST_WORKER_ERROR,
                updated_at=now,
            )
            if updated:
                Attempt.objects.create(
                    delivery=delivery,
                    number=delivery.attempt_count,
                    started_at=delivery.updated_at,
                    method=delivery.method,
                    url=mask_url(delivery.url),
                    error=LOST_WORKER_ERROR,
                    outcome=Attempt.Outcome.FAILED if exhausted else Attempt.Outcome.RETRY,
                )
                reclaimed += 1
    return reclaimed


def deliveries_sweep(limit: int = 5000) -> dict[str, int]:
    """Reclaim stuck deliveries, then enqueue due ones whose task is missing or lost.

    A due delivery is (re-)enqueued when no task was sent for it, or when the last one
    was sent more than ``POSTBACKS_REQUEUE_AFTER_SECONDS`` ago and it is still scheduled.
    Returns counts: ``{"reclaimed": n, "enqueued": m}``.
    """
    reclaimed = deliveries_reclaim(limit)
    now = timezone.now()
    stale = now - timedelta(seconds=settings.POSTBACKS_REQUEUE_AFTER_SECONDS)
    due = list(
        Delivery.objects.filter(status=Delivery.Status.SCHEDULED, due_at__lte=now)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    if due:
        Delivery.objects.filter(pk__in=due).update(enqueued_at=now)
        enqueue((pk, now) for pk in due)
    return {"reclaimed": reclaimed, "enqueued": len(due)}


def deliveries_retry_now(deliveries: Iterable[Delivery]) -> int:
    """Schedule failed or waiting deliveries for one more attempt right away.

    A failed delivery gets one extra attempt (and its usual retries if that one fails
    with a retryable error are not added). Delivered and in-flight ones are left alone.
    Returns how many were scheduled.
    """
    now = timezone.now()
    ids = []
    for delivery in deliveries:
        if delivery.status not in (Delivery.Status.FAILED, Delivery.Status.SCHEDULED):
            continue
        updated = Delivery.objects.filter(pk=delivery.pk, status=delivery.status).update(
            status=Delivery.Status.SCHEDULED,
            due_at=now,
            enqueued_at=now,
            max_attempts=max(delivery.max_attempts, delivery.attempt_count + 1),
            updated_at=now,
        )
        if updated:
            ids.append(delivery.pk)
    transaction.on_commit(lambda: enqueue((pk, now) for pk in ids))
    return len(ids)


def deliveries_cancel(deliveries: Iterable[Delivery]) -> int:
    """Cancel deliveries still waiting for an attempt; returns how many were cancelled."""
    ids = [d.pk for d in deliveries]
    return Delivery.objects.filter(pk__in=ids, status=Delivery.Status.SCHEDULED).update(
        status=Delivery.Status.CANCELLED, updated_at=timezone.now()
    )
