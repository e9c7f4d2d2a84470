"""``{% postbacks_dashboard %}``: the postbacks dashboard (postbacks.dashboard) in admin."""

from typing import Any

from django import template
from django.template import Context

from postbacks import dashboard

register = template.Library()


@register.inclusion_tag("admin/postbacks/dashboard.html", takes_context=True)
def postbacks_dashboard(context: Context) -> dict[str, Any]:
    """Figures for staff who may view deliveries; the banner for those who may view rules."""
    user = context["request"].user
    show_figures = user.has_perm("postbacks.view_delivery")
    show_rules = user.has_perm("postbacks.view_postbackrule")
    return {
        "figures": dashboard.figures() if show_figures else None,
        "attention_rules": dashboard.attention_rules() if show_rules else [],
    }
