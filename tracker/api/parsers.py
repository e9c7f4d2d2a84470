"""The API's JSON parser: DRF's, with a nesting too deep for the decoder answered 400
``parse_error`` (Python's decoder raises RecursionError on ~1,000 nested arrays; DRF's
parser lets that through as a 500)."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """``application/json``; raises ParseError (400 ``parse_error``) for invalid or too
    deeply nested JSON."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
