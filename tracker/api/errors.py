"""The API's error body, ``{"error": <code>, "detail": ...}``, for every error (DRF's own,
Django's ValidationError and Http404, and :class:`DomainError`); its schema
(:class:`TrackerErrorSerializer`, :func:`error_responses`) and the 409 of a protected
delete (:class:`ProtectedDeleteMixin`). Every app's API resources import this module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from tracker.api.base import django_errors


def _code(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    codes = exc.get_codes()
    if isinstance(codes, str):
        return codes
    return getattr(exc, "default_code", "error")


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, with every error body as ``{"error": <code>, "detail": ...}``:
    ``detail`` is a text, or for a 400 the field errors ``{"field": ["message", ...]}``.
    Codes: ``invalid`` (400), ``not_authenticated`` / ``authentication_failed`` /
    ``invalid_token`` (401), ``permission_denied`` (403), ``not_found`` (404),
    ``method_not_allowed`` (405), ``unsupported_media_type`` (415), ``throttled`` (429),
    or a domain code (e.g. ``unknown_click_id``) raised as :class:`DomainError`."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(django_errors(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, RequestDataTooBig):
        exc = BodyTooLarge()
    if isinstance(exc, OverflowError):  # e.g. ?campaign=1e30 on SQLite (64-bit integers)
        exc = exceptions.ValidationError("A number in the request is out of range.")
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    detail = response.data
    if isinstance(detail, dict) and set(detail) == {"detail"}:
        detail = detail["detail"]
    if isinstance(exc, DomainError):
        detail = exc.detail
    response.data = {"error": _code(exc), "detail": detail}
    return response


class BodyTooLarge(exceptions.APIException):
    """413: a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB; files go by multipart up
    to their own limit)."""

    status_code = 413
    default_code = "body_too_large"
    default_detail = "The request body is too large."


class DomainError(exceptions.APIException):
    """A refusal with its own code, e.g. ``DomainError(404, "unknown_click_id", "No click
    with ID ...")``: answered ``{"error": code, "detail": detail}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: Any) -> None:
        self.status_code = status
        self.detail = detail
        self.code = code

    def get_codes(self) -> str:
        return self.code


class TrackerErrorSerializer(serializers.Serializer):
    """The error body of every refusal."""

    error = serializers.CharField(help_text="A machine code, e.g. invalid_payout.")
    detail = serializers.JSONField(help_text="A text, or field errors for code invalid.")


def error_responses(
    *codes: int, described: Mapping[int, str] | None = None
) -> dict[int, OpenApiResponse]:
    """Schema responses for ``codes`` (HTTP statuses), each with the error body
    (:class:`TrackerErrorSerializer`) and the description ``described`` gives it, if any."""
    described = described or {}
    return {
        code: OpenApiResponse(TrackerErrorSerializer, description=described.get(code, ""))
        for code in codes
    }


class ProtectedDeleteMixin:
    """DELETE of a row still used elsewhere (protected foreign keys): 409 ``protected``."""

    def perform_destroy(self, instance: models.Model) -> None:
        try:
            instance.delete()
        except (ProtectedError, RestrictedError) as exc:
            used_by = sorted({str(obj._meta.verbose_name_plural) for obj in exc.args[1]})
            raise DomainError(
                409, "protected", f"“{instance}” is still used by: {', '.join(used_by)}."
            ) from None
