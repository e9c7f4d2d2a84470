"""What every API view shares: model permissions, pagination and a strict
model serializer that validates like the admin (model ``full_clean``) and refuses unknown
fields."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import pagination, permissions, serializers
from rest_framework.settings import api_settings


class ModelPermissions(permissions.DjangoModelPermissions):
    """Django model permissions, reading included: GET/HEAD/OPTIONS need ``view_<model>``,
    POST ``add``, PUT/PATCH ``change``, DELETE ``delete`` (401 without credentials, 403
    without the permission). Views without a queryset (operations) set their own."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }


class PagePagination(pagination.PageNumberPagination):
    """``?page=N&page_size=M`` (default 50, at most 500), with ``count``."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class LogCursorPagination(pagination.CursorPagination):
    """Cursor pagination for the large, growing tables (clicks, conversions, deliveries,
    attempts): newest first by primary key, stable while rows are added (no ``count``, no
    page numbers; follow ``next``). ``?page_size=M``: default 50, at most 500."""

    ordering: str | list[str] | tuple[str, ...] = "-pk"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class TimeCursorPagination(LogCursorPagination):
    """:class:`LogCursorPagination` newest first by a time column, then id (``time_field``,
    which must have an index on ``(time_field, id)``): a date-range filter then reads that
    index instead of walking the primary key past every newer row."""

    time_field = "created_at"

    def get_ordering(self, request, queryset, view) -> tuple[str, str]:
        return (f"-{self.time_field}", "-id")


def django_errors(exc: DjangoValidationError) -> dict[str, list[str]] | list[str]:
    if hasattr(exc, "error_dict"):
        key = api_settings.NON_FIELD_ERRORS_KEY
        return {
            (key if field == "__all__" else field): [str(m) for e in errors for m in e.messages]
            for field, errors in exc.error_dict.items()
        }
    return list(exc.messages)


def _nullable(model: type[models.Model], name: str) -> bool:
    """Whether ``name`` of ``model`` may be None: a nullable column, or not a column."""
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return True
    return bool(getattr(field, "null", True)) or not getattr(field, "concrete", False)


class StrictModelSerializer(serializers.ModelSerializer):
    """A model serializer that (1) refuses fields it does not know (400 naming them, rather
    than ignoring a typo; read-only fields sent for writing are ignored, as DRF does);
    (2) validates like the admin: the model's ``full_clean()`` (field validators, choices,
    ``clean()``) on the instance as it would be saved, with errors keyed by field."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) or hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in unknown[:20]}
                )
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        model: type[models.Model] = self.Meta.model
        # A JSON field of a form-encoded body reads "null" as None after DRF's own null
        # check, and full_clean() skips None in a blank=True field: the column refuses it.
        nulls = {
            name: ["This field may not be null."]
            for name, value in attrs.items()
            if value is None and not _nullable(model, name)
        }
        if nulls:
            raise serializers.ValidationError(nulls)
        instance = model()
        if self.instance is not None:
            for field in model._meta.concrete_fields:
                setattr(instance, field.attname, getattr(self.instance, field.attname))
            instance._state.adding = False  # an update: its own row is no uniqueness clash
        many = {f.name for f in model._meta.many_to_many}
        for name, value in attrs.items():
            if name not in many:
                setattr(instance, name, value)
        exclude = [f.name for f in model._meta.fields if f.name not in attrs and not f.editable]
        try:
            instance.full_clean(exclude=exclude, validate_unique=True)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(django_errors(exc)) from None
        self.clean_instance(instance, attrs)
        return attrs

    def clean_instance(self, instance: models.Model, attrs: dict[str, Any]) -> None:
        """Further checks on the unsaved ``instance`` (m2m values in ``attrs``); raise
        serializers.ValidationError. Nothing by default."""


class StrictSerializer(serializers.Serializer):
    """A plain serializer that refuses fields it does not know (400 naming them)."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown field."] for name in unknown[:20]}
                )
        return super().to_internal_value(data)
