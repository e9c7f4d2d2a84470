"""REST API resources of this app (serializers and viewsets), registered under /api/v1/.

- ``postback-rules``: CRUD of rules, validated by the domain's rule form (same checks,
  same messages) on top of the model's ``full_clean``; ``{id}/preview/`` and ``{id}/test/``
  are the rule form's preview and test button (``postbacks.preview``), for a conversion,
  a click or samples. Secrets in the templates (header values, URL parameter values such as
  ``token=``) are write-only (:mod:`postbacks.masking`).
- ``deliveries`` and ``attempts``: the delivery log, read-only, newest first (by time, then id) with
  cursor pagination, filtered like the admin log; replay and cancel of deliveries.
- ``macros``: the macro catalogue.
"""

from __future__ import annotations

from rest_framework.routers import BaseRouter

from postbacks.api.log import AttemptViewSet, DeliveryViewSet
from postbacks.api.macros import MacroViewSet
from postbacks.api.rules import PostbackRuleViewSet


def register(router: BaseRouter) -> None:
    """Add this app's viewsets to ``router``."""
    router.register("postback-rules", PostbackRuleViewSet, basename="postbackrule")
    router.register("deliveries", DeliveryViewSet, basename="delivery")
    router.register("attempts", AttemptViewSet, basename="attempt")
    router.register("macros", MacroViewSet, basename="macro")
