"""Which events a postback rule fires on: its scope (campaigns, offers, traffic sources,
networks) and its firing conditions (trigger, statuses, conversion types, rejection
reasons, first conversion only).

:class:`RuleMatching` is a mixin of :class:`postbacks.models.PostbackRule`; its checks are
query-free when the rule's many-to-many relations are prefetched (``services.rules_for``),
as the planner checks every active rule on every event. :class:`Scope` is what an event
belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from postbacks.choices import EventType, Trigger


@dataclass(frozen=True)
class Scope:
    """What an event belongs to, for matching rule scopes."""

    campaign_id: int
    offer_id: int | None
    traffic_source_id: int
    affiliate_network_id: int | None


class RuleMatching:
    """Scope and firing-condition checks of a rule; the model gives the fields
    (``event_type``, ``trigger``, ``statuses``, ``conversion_types``, ``first_only``) and the
    relations (``campaigns``, ``offers``, ``traffic_sources``, ``affiliate_networks``,
    ``rejection_reasons``)."""

    event_type: str
    trigger: str
    statuses: list[str]
    conversion_types: list[str]
    first_only: bool

    def _chosen(self, relation: str) -> Iterable[Any]:
        """The objects of M2M ``relation``: the prefetched ones when they are (without
        building a related manager: the planner checks every rule on every event), else
        ``.all()``. The same objects either way; ``add``/``set``/``clear`` drop the prefetch."""
        prefetched = getattr(self, "_prefetched_objects_cache", None)
        if prefetched is not None and relation in prefetched:
            return prefetched[relation]
        return getattr(self, relation).all()

    @property
    def conditions_apply(self) -> bool:
        """Whether the firing conditions (trigger, statuses, conversion types, rejection
        reasons, first conversion only) apply: to conversion and event rules; impression
        and click rules fire for every event in their scope."""
        return self.event_type in (EventType.CONVERSION, EventType.EVENT)

    @property
    def is_global(self) -> bool:
        """No campaign, offer, traffic source or network chosen (needs the M2M prefetched)."""
        return not any(
            self._chosen(relation)
            for relation in ("campaigns", "offers", "traffic_sources", "affiliate_networks")
        )

    def in_scope(self, scope: Scope) -> bool:
        """Whether the event belongs to this rule's scope (query-free with M2M prefetched)."""
        chosen = (
            (self._chosen("campaigns"), scope.campaign_id),
            (self._chosen("offers"), scope.offer_id),
            (self._chosen("traffic_sources"), scope.traffic_source_id),
            (self._chosen("affiliate_networks"), scope.affiliate_network_id),
        )
        for objects, object_id in chosen:
            ids = {o.pk for o in objects}
            if ids and object_id not in ids:
                return False
        return True

    def accepts(
        self,
        *,
        status: str = "",
        conversion_type: str = "",
        rejection_reason: str = "",
        is_first: bool = True,
    ) -> bool:
        """Whether the firing conditions accept a conversion in this state (the trigger
        aside): statuses, conversion types (any case), rejection reasons (only checked for
        rejected conversions), first conversion only. Query-free with the M2M prefetched.
        Used both to plan deliveries and to cancel the delayed ones a status change made
        obsolete."""
        if not self.conditions_apply:
            return True
        if self.statuses and status not in self.statuses:
            return False
        types = {t.lower() for t in self.conversion_types or []}
        if types and conversion_type.lower() not in types:
            return False
        reasons = {r.code for r in self._chosen("rejection_reasons")}
        if reasons and (status != "rejected" or rejection_reason.lower() not in reasons):
            return False
        return not (self.first_only and not is_first)

    def matches(
        self,
        scope: Scope,
        status: str = "",
        conversion_type: str = "",
        *,
        rejection_reason: str = "",
        trigger: str = Trigger.CREATED,
        is_first: bool = True,
    ) -> bool:
        """True when this rule's scope, trigger and firing conditions accept the event.

        ``trigger``: ``created`` for a new event, ``changed`` for a conversion's status
        change. Needs the M2M ids prefetched (see ``services.rules_for``) to stay query-free.
        """
        if not self.in_scope(scope):
            return False
        if self.conditions_apply and self.trigger not in (trigger, Trigger.BOTH):
            return False
        return self.accepts(
            status=status,
            conversion_type=conversion_type,
            rejection_reason=rejection_reason,
            is_first=is_first,
        )
