"""What the rule form shows before a rule is saved: sample macro values, the request a rule
would send, and a test postback sent there and then.

- :func:`sample_context`: macro values of a real conversion or a real click (click and
  impression rules have no conversion), or realistic samples.
- :func:`render_preview`: the request an (unsaved) rule renders, with its errors and
  warnings; never raises.
- :func:`find_conversion`: the conversion asked for by ID or transaction ID.
- :func:`describe_click`: where the values of a preview or test for a click come from.
- :func:`send_test`: one attempt through the real transport, logged as a test delivery
  (``Delivery.is_test``), never retried and never counted toward auto-disable.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from postbacks.answers import storable
from postbacks.masking import mask_secrets
from postbacks.models import Attempt, Delivery, EventType, PostbackRule
from postbacks.samples import (
    SAMPLE_DELIVERY_ID,
    SAMPLE_VALUES,
    sample_values_context,
)
from postbacks.services import payout_in, unconverted_note
from postbacks.transports import Outcome, PreparedRequest, get_transport
from tracker import macros
from tracker.models import Click, Conversion, RejectionReason

logger = logging.getLogger(__name__)

# How a test delivery of a rule not saved yet starts its event_detail (the log says so).
UNSAVED_RULE_TEST = "test of the unsaved rule"
NO_CLICK_ERROR = "No click to test with: record a click first (open a campaign URL)"
# The catalogue group of the conversion's own macros (payout, txid, status, param1..20...).
CONVERSION_GROUP = macros.CATALOGUE["payout"].group


def sample_context(
    rule: PostbackRule | None = None,
    conversion: Conversion | None = None,
    *,
    click: Click | None = None,
    notes: list[str] | None = None,
) -> dict[str, str]:
    """Macro values for a preview or a test, under every accepted spelling.

    With ``conversion``: its real values (``macros.build_context``; its click, offer,
    campaign and traffic source are loaded), ``event.type`` after ``rule``. With ``click``
    (reloaded with its campaign, offer, network and traffic source): that click's real
    values, as a click or impression rule sends them; for a conversion or event rule (or
    no rule) the conversion macros (``{payout}``, ``{txid}``, ``{status}``...) hold
    :data:`SAMPLE_VALUES`. Without either: :data:`SAMPLE_VALUES`, plus ``var:<name>``
    samples for the named variables the rule's templates use. ``delivery.id`` is a fixed
    sample UUID in every case. A rule with a payout currency gets ``{payout}`` converted as
    the planner would (``services.payout_in``); when a rate is missing, a sentence saying
    so is appended to ``notes``.

    Raises ValueError when both ``conversion`` and ``click`` are given, and
    Click.DoesNotExist / Conversion.DoesNotExist for an unsaved or deleted one.
    """
    if conversion is not None and click is not None:
        raise ValueError("Give a conversion or a click, not both.")
    event_type = rule.event_type if rule is not None else ""
    with_payout = True
    if conversion is not None:
        conversion = _load(conversion)
        context = macros.build_context(conversion.click, conversion, event_type=event_type)
    elif click is not None:
        with_payout = takes_conversion(rule)
        context = macros.build_context(
            _load_click(click),
            event_type=event_type or (EventType.CONVERSION if with_payout else ""),
        )
        if with_payout:
            context.update(
                {
                    spelling: SAMPLE_VALUES.get(macro.name, "")
                    for spelling, macro in macros.CATALOGUE.items()
                    if macro.group == CONVERSION_GROUP
                }
            )
    else:
        context = sample_values_context(event_type)
        for name in _named_vars(rule):
            context[name] = f"{name.removeprefix(macros.NAMED_VAR_PREFIX)}-value"
    if rule is not None and rule.payout_currency and with_payout:
        _payout_in_rule_currency(rule, conversion, context, notes)
    context["delivery.id"] = SAMPLE_DELIVERY_ID
    return context


def takes_conversion(rule: PostbackRule | None) -> bool:
    """Whether ``rule`` fires on a conversion (a conversion or a status-change ``event``
    rule, or no rule: the samples are a conversion's), rather than a click or impression."""
    return rule is None or rule.event_type not in (EventType.CLICK, EventType.IMPRESSION)


def find_conversion(term: str) -> tuple[Conversion | None, str]:
    """The conversion a preview or test is asked for by ID or transaction ID (the most
    recent one with it), and ``""``; ``(None, "")`` for a blank ``term``; ``(None, problem)``
    when none has it."""
    term = term.strip()[:255]
    if not term:
        return None, ""
    found = None
    if term.isdigit() and len(term) < 19:
        found = Conversion.objects.filter(pk=int(term)).first()
    found = found or Conversion.objects.filter(txid=term).order_by("-created_at").first()
    if found is None:
        return None, f"No conversion with ID or transaction ID {term!r}."
    return found, ""


def describe_click(click: Click, rule: PostbackRule | None = None) -> str:
    """Where the values of a preview or test for ``click`` come from, e.g. ``"Click
    3f1c...: campaign Summer sale, external ID ts-1, with sample conversion values."``
    (the conversion part for a rule that :func:`takes_conversion`). Reads the campaign's
    name (one query unless loaded)."""
    parts = [f"Click {click.pk}: campaign {click.campaign.name}"]
    if click.external_id:
        parts.append(f"external ID {click.external_id}")
    if takes_conversion(rule):
        parts.append("with sample conversion values")
    return ", ".join(parts) + "."


def _payout_in_rule_currency(
    rule: PostbackRule,
    conversion: Conversion | None,
    context: dict[str, str],
    notes: list[str] | None,
) -> None:
    """Put the payout in the rule's payout currency into ``context``, as the planner does."""
    if conversion is not None:
        payout, source = conversion.payout, conversion.currency
    else:
        payout, source = Decimal(SAMPLE_VALUES["payout"]), SAMPLE_VALUES["payout_currency"]
    values, missing = payout_in(payout, source, rule.payout_currency)
    context.update(values)
    if not values and source != rule.payout_currency and notes is not None:
        why = unconverted_note(source, rule.payout_currency, missing)
        notes.append(f"Payout currency: {rule.payout_currency} asked, but {why}.")


def render_preview(
    rule: PostbackRule,
    conversion: Conversion | None = None,
    *,
    click: Click | None = None,
    known_vars: set[str] | None = None,
) -> dict[str, Any]:
    """The request ``rule`` would send (saved or not; its M2M are not read):
    ``{"method", "url", "headers": {...}, "body", "errors": [...], "warnings": [...]}``.

    Filled in from ``conversion`` or ``click`` when given (see :func:`sample_context`),
    else from sample values. Errors and warnings are sentences prefixed with the field
    they concern ("Postback URL: ..."); the request is rendered even when there are
    errors. Never raises for any rule; ValueError when both ``conversion`` and ``click``
    are given (a caller's mistake).
    """
    if conversion is not None and click is not None:
        raise ValueError("Give a conversion or a click, not both.")
    errors: list[str] = []
    warnings: list[str] = []
    prepared = PreparedRequest(rule.http_method or "GET", "")
    try:
        transport = get_transport(rule.kind)
    except KeyError:
        errors.append(f"Destination: unknown kind {rule.kind!r}.")
    else:
        try:
            warnings = transport.validate(rule, known_vars=known_vars)
        except ValidationError as exc:
            errors = field_messages(exc)
        except Exception as exc:
            logger.exception("Rule preview: validation failed")
            errors.append(f"Could not check the rule: {type(exc).__name__}: {exc}")
        try:
            context = sample_context(rule, conversion, click=click, notes=warnings)
            prepared = transport.prepare(rule, context)
        except Exception as exc:
            logger.exception("Rule preview: rendering failed")
            errors.append(f"Could not render the request: {type(exc).__name__}: {exc}")
    return {
        "method": prepared.method,
        "url": prepared.url,
        "headers": dict(prepared.headers),
        "body": prepared.body,
        "errors": errors,
        "warnings": warnings,
    }


def field_messages(exc: ValidationError) -> list[str]:
    """The messages of a ValidationError, each prefixed with its rule field's label."""
    if not hasattr(exc, "error_dict"):
        return list(exc.messages)
    messages = []
    for name, items in exc.message_dict.items():
        try:
            label = str(getattr(PostbackRule._meta.get_field(name), "verbose_name", name))
        except Exception:
            label = name
        label = label[:1].upper() + label[1:]
        messages += [f"{label}: {message}" for message in items]
    return messages


def send_test(
    rule: PostbackRule,
    conversion: Conversion | None = None,
    user: Any = None,
    *,
    click: Click | None = None,
) -> tuple[Delivery, Attempt]:
    """Send ``rule`` once, now, in this (web) request, and log it as a test delivery.

    The macro values come from ``conversion``, or from ``click`` (its real values, with
    sample conversion values for a conversion or event rule: :func:`sample_context`), and
    the delivery is linked to it; with neither, from the most recent click in the rule's
    scope (else any click) with sample conversion values; with no click at all, from
    samples only. The request goes through the rule's real transport, with the same
    private-network guard and deadline as the dispatcher. One :class:`Attempt` is written
    and the delivery ends ``delivered`` or ``failed`` (a retryable failure is not retried).
    ``rule`` may be unsaved (then the delivery has no rule). Raises ValidationError when the
    rule's templates have errors: nothing is sent then; ValueError when both
    ``conversion`` and ``click`` are given; KeyError for a rule kind with no transport.
    """
    if conversion is not None and click is not None:
        raise ValueError("Give a conversion or a click, not both.")
    transport = get_transport(rule.kind)
    transport.validate(rule)
    if conversion is not None:
        conversion = _load(conversion)
        click = conversion.click
        context = sample_context(rule, conversion)
    elif click is not None:
        click = _load_click(click)
        context = sample_context(rule, click=click)
    else:
        context = sample_context(rule)
        click = _recent_click(rule)
        if click is not None:
            real = macros.build_context(click, event_type=rule.event_type)
            context.update({name: value for name, value in real.items() if value})
    public_id = uuid.uuid4()
    context["delivery.id"] = str(public_id)
    request = transport.prepare(rule, context)
    who = getattr(user, "get_username", lambda: "")() if user is not None else ""
    now = timezone.now()
    delivery = Delivery.planned(
        rule,
        request,
        public_id=public_id,
        due_at=now,
        idempotency_key=f"test:{public_id}",
        event_detail=_test_detail(rule, who),
        click=click,
        conversion=conversion,
        traffic_source_id=click.traffic_source_id if click is not None else None,
        is_test=True,
        attempt_count=1,
        max_attempts=1,
    )
    result = transport.send(request, timeout=rule.timeout_seconds, secrets=rule.secrets())
    error = result.error
    if result.outcome == Outcome.DELIVERED:
        outcome, delivery.status = Outcome.DELIVERED, Delivery.Status.DELIVERED
        delivery.delivered_at = now
    else:
        outcome, delivery.status = Outcome.FAILED, Delivery.Status.FAILED
        if result.outcome == Outcome.RETRY:
            error = f"{error} (a test is not retried)"
    delivery.last_status_code = result.status_code
    delivery.last_error = storable(mask_secrets(error))
    # Written once the answer is in: a delivery "sending" under no worker would be taken
    # back by the sweeper mid-test and sent again.
    with transaction.atomic():
        delivery.save(force_insert=True)
        attempt = Attempt.logged(
            delivery_id=delivery.pk,
            number=1,
            started_at=now,
            method=request.method,
            url=request.url,
            outcome=outcome,
            error=error,
            result=result,
        )
        attempt.save(force_insert=True)
    logger.info(
        "Test postback %s: %s %s -> %s in %d ms",
        delivery.public_id, outcome, attempt.url, result.status_code or attempt.error,
        result.duration_ms,
    )  # fmt: skip
    return delivery, attempt


def _test_detail(rule: PostbackRule, who: str) -> str:
    """The test delivery's ``event_detail``: who sent it, and for an unsaved rule (which
    the delivery cannot point to) its name, so that the log does not call it deleted."""
    detail = "test" if rule.pk else f"{UNSAVED_RULE_TEST} {rule.name!r}"
    return f"{detail} sent by {who}"[:200] if who else detail[:200]


def _load(conversion: Conversion) -> Conversion:
    """``conversion`` with what ``build_context`` reads loaded (click, offer, campaign,
    network, traffic source and its named parameters, the rejection reason's label)."""
    loaded = (
        Conversion.objects.select_related(
            "click__campaign", "click__offer__affiliate_network", "click__traffic_source"
        )
        .prefetch_related("click__traffic_source__parameters")
        .get(pk=conversion.pk)
    )
    if loaded.rejection_reason:
        label = (
            RejectionReason.objects.filter(code=loaded.rejection_reason)
            .values_list("label", flat=True)
            .first()
        )
        loaded.rejection_reason_label = label or ""
    return loaded


def _clicks() -> QuerySet[Click]:
    """Clicks with what ``build_context`` reads loaded (campaign, offer, network, traffic
    source and its named parameters)."""
    return Click.objects.select_related(
        "campaign", "offer__affiliate_network", "traffic_source"
    ).prefetch_related("traffic_source__parameters")


def _load_click(click: Click) -> Click:
    """``click`` reloaded with what ``build_context`` reads (:func:`_clicks`)."""
    return _clicks().get(pk=click.pk)


def _recent_click(rule: PostbackRule) -> Click | None:
    """The most recent click in the scope of a saved rule, else the most recent click."""
    recent = _clicks().order_by("-created_at")
    if rule.pk:
        scoped = recent
        for relation, lookup in (
            ("campaigns", "campaign_id__in"),
            ("offers", "offer_id__in"),
            ("traffic_sources", "traffic_source_id__in"),
            ("affiliate_networks", "offer__affiliate_network_id__in"),
        ):
            ids = list(getattr(rule, relation).values_list("pk", flat=True))
            if ids:
                scoped = scoped.filter(**{lookup: ids})
        click = scoped.first()
        if click is not None:
            return click
    return recent.first()


def _named_vars(rule: PostbackRule | None) -> list[str]:
    """``var:<name>`` macros in the rule's templates."""
    if rule is None:
        return []
    templates = (rule.url_template, rule.body_template, rule.headers_template)
    names = [name for text in templates if text for name in macros.find_macros(text)]
    return [name for name in dict.fromkeys(names) if name.startswith(macros.NAMED_VAR_PREFIX)]
