"""List filters of the rule list: a rule's state, and the choice fields (type, trigger,
destination, HTTP method) offered only with the values some rule has."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin
from django.contrib.admin import ModelAdmin
from django.db.models import Field, QuerySet
from django.http import HttpRequest

from postbacks.models import PostbackRule


def existing_choices_filter(field_name: str, title: str) -> type[admin.SimpleListFilter]:
    """A list filter offering only the values rules have (hidden below two values)."""

    class ExistingChoicesFilter(admin.SimpleListFilter):
        parameter_name = field_name

        def lookups(
            self, request: HttpRequest, model_admin: ModelAdmin[Any]
        ) -> list[tuple[str, str]]:
            field = cast("Field[Any, Any]", PostbackRule._meta.get_field(field_name))
            labels = dict(field.flatchoices)
            values = (
                PostbackRule.objects.order_by(field_name)
                .values_list(field_name, flat=True)
                .distinct()
            )
            found = [(value, labels.get(value, value)) for value in values]
            return found if len(found) > 1 else []

        def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
            if self.value():
                return queryset.filter(**{field_name: self.value()})
            return queryset

    ExistingChoicesFilter.title = title
    return ExistingChoicesFilter


class StateFilter(admin.SimpleListFilter):
    """Active, inactive, auto-disabled, needing attention: only the states some rule is in."""

    title = "state"
    parameter_name = "state"
    STATES = {
        "active": ("Active", {"is_active": True}),
        "inactive": ("Inactive", {"is_active": False}),
        "auto": ("Auto-disabled", {"is_active": False, "disabled_at__isnull": False}),
        "attention": ("Needs attention", {"needs_attention": True}),
    }

    def lookups(self, request: HttpRequest, model_admin: ModelAdmin[Any]) -> list[tuple[str, str]]:
        rules = PostbackRule.objects.all()
        return [
            (key, label)
            for key, (label, lookup) in self.STATES.items()
            if rules.filter(**lookup).exists()
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in self.STATES:
            return queryset.filter(**self.STATES[value][1])
        return queryset
