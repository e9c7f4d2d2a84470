"""Shared pieces of the inbound endpoints: the error shape, the client address, Django's
own refusals, the 1x1 GIF."""

from __future__ import annotations

import base64

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError

from tracker.remote import client_ip

__all__ = ["InboundError", "client_ip", "error"]


class InboundError(Exception):
    """A request refused before any database work: answered ``status`` with ``code``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def error(code: str, detail: str, status: int) -> JsonResponse:
    """A 4xx/5xx answer in the documented shape."""
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _django_refusal(exc: Exception) -> InboundError:
    """The answer to an exception Django raises while reading a request."""
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return InboundError(413, "body_too_large", f"The body is over {limit} bytes.")
    if isinstance(exc, MultiPartParserError | BadRequest | UnicodeDecodeError | LookupError):
        # BadRequest: a form not in UTF-8 (charset=utf-16); LookupError: an unknown charset.
        return InboundError(400, "invalid_body", f"The body cannot be parsed: {exc}")
    # TooManyFieldsSent, TooManyFilesSent and other SuspiciousOperation subclasses.
    return InboundError(400, "too_many_fields", str(exc) or "The request was refused.")


# A transparent 1x1 GIF (42 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def click_id_from_cookie(request: HttpRequest) -> str:
    """The click ID in the click-ID cookie (``CLICK_COOKIE_NAME``, set by ``/c``), stripped;
    "" when there is none. Used by the pixel, the script and the lander click-through."""
    return request.COOKIES.get(settings.CLICK_COOKIE_NAME, "").strip()[:64]
