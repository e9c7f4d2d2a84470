"""OpenAPI post-processing (drf-spectacular ``POSTPROCESSING_HOOKS``): every operation
documents the error answers it can give, all with the one error body."""

from __future__ import annotations

from typing import Any

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
    "404": "not_found, or a domain code such as unknown_click_id",
    "413": "body_too_large",
    "429": "throttled (Retry-After header)",
}


def error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """Add the ``Error`` schema and, to each operation, the error statuses it can answer
    (400 when it takes a body or query parameters, 404 for paths with an id, 413 with a
    body; 401, 403 and 429 always), keeping any an operation documents itself."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            has_body = "requestBody" in operation
            has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
            codes = ["401", "403", "429"]
            if has_body or has_query:
                codes.append("400")
            if "{" in path:
                codes.append("404")
            if has_body:
                codes.append("413")
            for code in sorted(codes):
                operation["responses"].setdefault(
                    code, {"description": ERRORS[code], "content": ref}
                )
    return result
