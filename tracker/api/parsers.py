"""The API's JSON parsers: DRF's, with a nesting too deep for the decoder answered 400
``parse_error`` (Python's decoder raises RecursionError on ~1,000 nested arrays; DRF's
parser lets that through as a 500); :class:`ExactJSONParser` keeps numbers as text."""

from __future__ import annotations

import json
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


class ExactJSONParser(parsers.JSONParser):
    """JSON whose numbers stay text (exact decimals; never a float or a 10,000-digit int):
    the conversion form validates them as /cv does."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            raw = stream.read() if stream is not None else b""
            return json.loads(raw or b"{}", parse_float=str, parse_int=str, parse_constant=str)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
