"""OpenAPI post-processing (drf-spectacular ``POSTPROCESSING_HOOKS``): every operation
documents every error status it can answer, all with the one error body."""

from __future__ import annotations

import re
from typing import Any

from tracker.api.errors import ProtectedDeleteMixin

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "Machine code, e.g. invalid, not_found."},
        "detail": {
            "description": "A text, or for 400 invalid the field errors "
            '{"field": ["message", ...]}.',
        },
    },
    "required": ["error", "detail"],
}
ERRORS = {
    "400": "invalid (field errors), parse_error, or a domain code such as invalid_payout",
    "401": "not_authenticated, invalid_token, inactive_user",
    "403": "permission_denied: the token's user lacks the model permission",
    "404": "not_found (no such id, page or cursor), or a domain code such as unknown_click_id",
    "406": "not_acceptable: the Accept header names no format the API answers (JSON)",
    "409": "protected: the row is still used elsewhere (delete those first)",
    "413": "body_too_large",
    "415": "unsupported_media_type: a body that is not JSON, form or multipart",
    "429": "throttled (Retry-After header)",
}
PAGE_PARAMETERS = {"page", "cursor"}


def error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """Add the ``Error`` schema and, to each operation, the error statuses it can answer,
    keeping any an operation documents itself:

    - 401, 403, 406 (an Accept header without JSON) and 429: always;
    - 400 when it takes a body or query parameters;
    - 404 for paths with an id, and for paginated lists (a ``page`` or ``cursor`` past the
      end or malformed);
    - 409 for a DELETE of a view with ``ProtectedDeleteMixin`` (a row still referenced);
    - 413 and 415 when it takes a body.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    protected = _protected_deletes(generator)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            has_body = "requestBody" in operation
            query = {
                p.get("name") for p in operation.get("parameters", []) if p.get("in") == "query"
            }
            codes = ["401", "403", "406", "429"]
            if has_body or query:
                codes.append("400")
            if "{" in path or query & PAGE_PARAMETERS:
                codes.append("404")
            if method == "delete" and _shape(path) in protected:
                codes.append("409")
            if has_body:
                codes += ["413", "415"]
            for code in sorted(codes):
                operation["responses"].setdefault(
                    code, {"description": ERRORS[code], "content": ref}
                )
    return result


def _shape(path: str) -> str:
    """A path with its parameters blanked (``/offers/{id}/`` and ``/offers/{pk}/`` alike)."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _protected_deletes(generator: Any) -> set[str]:
    """The paths (:func:`_shape`) whose DELETE may answer 409 ``protected``: views with
    ``tracker.api.errors.ProtectedDeleteMixin``, from the generator's endpoints."""
    paths = set()
    for path, _regex, method, callback in getattr(generator, "endpoints", None) or ():
        view_class = getattr(callback, "cls", None)
        if (
            method.upper() == "DELETE"
            and (getattr(callback, "actions", None) or {}).get("delete") == "destroy"
            and isinstance(view_class, type)
            and issubclass(view_class, ProtectedDeleteMixin)
        ):
            paths.add(_shape(path))
    return paths
