"""Serializer pieces shared by the campaigns API resources: nested rows written with their
parent (a source's parameters, a campaign's offers) and mapping checks."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from rest_framework import serializers

from campaigns.mapping import MappingField
from tracker.api.base import (
    StrictModelSerializer,
    django_errors,
)

ModelSerializer = StrictModelSerializer


class NestedRowSerializer(StrictModelSerializer):
    """A row of a parent's nested list: model ``full_clean`` without the parent link (set
    on save) and without constraints across rows (the parent checks those)."""

    parent_field = ""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        model: type[models.Model] = self.Meta.model
        instance = model(**attrs)
        try:
            instance.full_clean(
                exclude=[self.parent_field], validate_unique=False, validate_constraints=False
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(django_errors(exc)) from None
        return attrs


class NestedListSerializer(ModelSerializer):
    """A model serializer with nested writable lists (``nested``: serializer field name ->
    related manager name): a list sent replaces every row; a list not sent (PATCH) leaves
    the rows as they are."""

    nested: dict[str, str] = {}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The model's full_clean cannot take reverse relations: check the rest, keep them.
        rows = {name: attrs.pop(name) for name in self.nested.values() if name in attrs}
        attrs = super().validate(attrs)
        attrs.update(rows)
        return attrs

    def create(self, validated_data: dict[str, Any]) -> models.Model:
        rows = {name: validated_data.pop(name, []) for name in self.nested.values()}
        with transaction.atomic():
            instance = super().create(validated_data)
            for name, items in rows.items():
                self.replace_rows(instance, name, items)
        return instance

    def update(self, instance: models.Model, validated_data: dict[str, Any]) -> models.Model:
        rows = {n: validated_data.pop(n) for n in self.nested.values() if n in validated_data}
        with transaction.atomic():
            instance = super().update(instance, validated_data)
            for name, items in rows.items():
                self.replace_rows(instance, name, items)
        return instance

    def replace_rows(self, instance: models.Model, name: str, items: list[dict]) -> None:
        """Delete the rows of ``instance.<name>`` and create ``items`` (one by one: the
        campaign cache is cleared by the save signals)."""
        manager = getattr(instance, name)
        manager.all().delete()
        for item in items:
            manager.create(**item)
        if hasattr(instance, "_prefetched_objects_cache"):
            instance._prefetched_objects_cache.pop(name, None)


def check_mapping(field: MappingField, value: dict[str, Any]) -> dict[str, str]:
    """``value`` (a JSON object) as the mapping ``field`` reads it
    (:meth:`~campaigns.mapping.MappingField.from_json`); a 400 naming each bad key."""
    try:
        return field.from_json(value)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.messages) from exc
