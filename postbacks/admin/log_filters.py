"""List filters of the delivery log: slow attempts, and the small related tables (rules,
traffic sources, offers, campaigns) offered only for the rows that have something in the
log, one index probe each, never a scan of the log."""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib import admin
from django.contrib.admin import ModelAdmin
from django.db.models import Exists, Model, OuterRef, Q, QuerySet
from django.http import HttpRequest

from campaigns.models import Campaign, Offer, TrafficSource
from postbacks.models import SLOW_MS, Delivery, PostbackRule
from tracker.models import Click


class SlowFilter(admin.SimpleListFilter):
    title = "duration"
    parameter_name = "slow"

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("1", f"Slower than {SLOW_MS / 1000:g} s")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "1":
            return queryset.filter(duration_ms__gt=SLOW_MS)
        return queryset


class RelatedLogFilter(admin.SimpleListFilter):
    """A filter on a small related table (rules, sources, offers, campaigns).

    Its choices are the rows of that table that have something in the log: one EXISTS
    probe per row on the foreign key's index of ``probe_model``, never a scan of the log.
    ``lookup`` is the path from the delivery to the chosen row; ``prefix`` the path from the
    admin's model to the delivery ("" on Delivery, "delivery__" on Attempt).
    """

    model: type[Model] = PostbackRule
    probe_model: type[Model] = Delivery
    probe_field = "rule"
    lookup = "rule_id"
    prefix = ""

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[str, str]]:
        probe = self.probe_model._default_manager.filter(**{self.probe_field: OuterRef("pk")})
        rows = self.model._default_manager.filter(Exists(probe))
        chosen = self.value()
        if chosen:
            with contextlib.suppress(ValueError):
                rows = self.model._default_manager.filter(Exists(probe) | Q(pk=int(chosen)))
        return [(str(pk), name) for pk, name in rows.order_by("name").values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        try:
            value = int(self.value() or "")
        except ValueError:
            return queryset
        return queryset.filter(**{self.prefix + self.lookup: value})


class RuleFilter(RelatedLogFilter):
    title = "rule"
    parameter_name = "rule"


class SourceFilter(RelatedLogFilter):
    title = "traffic source"
    parameter_name = "source"
    model = TrafficSource
    probe_field = "traffic_source"
    lookup = "traffic_source_id"


class OfferFilter(RelatedLogFilter):
    """By the click's offer: a join to the click (see bench/README.md for its cost)."""

    title = "offer"
    parameter_name = "offer"
    model = Offer
    probe_model = Click
    probe_field = "offer"
    lookup = "click__offer_id"


class CampaignFilter(RelatedLogFilter):
    """By the click's campaign: a join to the click (see bench/README.md for its cost)."""

    title = "campaign"
    parameter_name = "campaign"
    model = Campaign
    probe_model = Click
    probe_field = "campaign"
    lookup = "click__campaign_id"


def attempt_filter(base: type[RelatedLogFilter]) -> type[RelatedLogFilter]:
    """``base`` for the attempt list: through the attempt's delivery."""
    return type(f"Attempt{base.__name__}", (base,), {"prefix": "delivery__"})
