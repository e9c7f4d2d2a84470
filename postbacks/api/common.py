"""Pieces shared by the postbacks API resources: inline enums in the schema, permission
checks on named model permissions."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import permissions, serializers
from rest_framework.request import Request


def inline_enum(field: serializers.ChoiceField) -> serializers.ChoiceField:
    """``field`` (a choice field) documented with its values inline: no shared enum
    component, whose name would collide with other apps' ``status`` enums."""
    values = list(field.choices)
    # drf-spectacular decorates field instances too; its stubs accept callables only.
    return extend_schema_field({"type": "string", "enum": values})(field)  # type: ignore[type-var]


class HasPermissions(permissions.BasePermission):
    """All of ``perms`` (``app_label.codename``), for an action a model permission does not
    cover; subclasses name them."""

    perms: tuple[str, ...] = ()

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perms(self.perms))
