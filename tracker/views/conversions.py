"""Conversion endpoints: the S2S postback ``/cv`` (``/cv/<network key>``), the image pixel
``/cv.gif`` and the script ``/cv.js``.

Answers per DESIGN.md: 200 with ``{"status": ...}`` on success, 4xx with
``{"error": "<code>", "detail": "..."}`` on bad input, never 500 on input. Every ``/cv``
request, including those Django itself refuses (wrong method, body too large, too many
fields), is answered in that shape and kept in :class:`~tracker.models.InboundRequest`.

Text that a database column cannot store is handled per endpoint: ``/cv`` refuses values
with NUL bytes or lone surrogates (400 ``invalid_characters``); ``/c`` drops NUL bytes from
what it records (a click is never refused for its user agent); the inbound log stores what
was sent with NUL bytes removed.
"""

from __future__ import annotations

import json
import logging

from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict, RawPostDataException
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from campaigns.models import AffiliateNetwork
from postbacks.masking import mask_secrets
from tracker import ingest, services
from tracker.forms import PARAM_FIELDS, ConversionPostbackForm
from tracker.ingest import Channel, Inbound, Result
from tracker.views.common import (
    PIXEL_GIF,
    InboundError,
    _django_refusal,
    click_id_from_cookie,
    client_ip,
)

logger = logging.getLogger(__name__)
LOG_TEXT_MAX = 4000
TOKEN_HEADER = "X-Postback-Token"


def _json_fields(body: bytes) -> dict[str, str]:
    """The fields of a JSON object body as text. Raises InboundError ``invalid_json``."""
    try:
        # Numbers stay text (exact, never inf or an over-long int): the form validates them.
        payload = json.loads(body or b"{}", parse_float=str, parse_int=str, parse_constant=str)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and bytes that are not UTF-8/16/32.
        raise InboundError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InboundError(400, "invalid_json", "The JSON body must be an object.")
    fields = {}
    for key, value in payload.items():
        if value is None:
            fields[key] = ""
        elif isinstance(value, str):
            fields[key] = value
        elif isinstance(value, bool):
            fields[key] = "true" if value else "false"
        elif key in ConversionPostbackForm.base_fields or key in PARAM_FIELDS:
            raise InboundError(400, "invalid_json", f"{key} must be a string or a number.")
    return fields


def _postback_data(request: HttpRequest) -> QueryDict:
    """Query string and form or JSON body, merged (body wins).

    Raises InboundError for a body that cannot be read (``invalid_json``, ``invalid_body``,
    ``body_too_large``, ``too_many_fields``).
    """
    try:
        data = request.GET.copy()
        if request.method == "POST":
            request.body  # noqa: B018 -- read once, kept for the inbound log
            if request.content_type == "application/json":
                for key, value in _json_fields(request.body).items():
                    data[key] = value
            else:
                data.update(request.POST)
    except (
        SuspiciousOperation,
        MultiPartParserError,
        BadRequest,
        UnicodeDecodeError,
        LookupError,
    ) as exc:
        raise _django_refusal(exc) from None
    data.setdefault("token", "")
    if not data["token"]:
        data["token"] = request.headers.get(TOKEN_HEADER, "")
    return data


def _inbound(request: HttpRequest, channel: str, network: AffiliateNetwork | None) -> Inbound:
    """What the inbound log keeps of ``request`` (the token masked)."""
    return Inbound(
        channel=channel,
        endpoint=request.path,
        http_method=request.method or "",
        query=_masked(request.META.get("QUERY_STRING", "")),
        body=_logged_body(request),
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        network=network,
        cookie_click_id=click_id_from_cookie(request) if channel != Channel.S2S else "",
    )


def _network(network_key: str) -> AffiliateNetwork | None:
    return AffiliateNetwork.objects.filter(key=network_key).first() if network_key else None


def _ingest(request: HttpRequest, channel: str, network_key: str = "") -> Result:
    """Read the request's parameters and register the conversion; every outcome logged."""
    network = _network(network_key)
    inbound = _inbound(request, channel, network)
    if network_key and network is None:
        detail = f"No affiliate network has the postback URL key {network_key!r}."
        sent = request.GET.get("click_id", "")
        result = ingest.error_result(404, "unknown_network", detail)
        return ingest.record(inbound, result, click_id=sent.strip())
    allowed = ("GET", "POST") if channel == Channel.S2S else ("GET",)
    if request.method not in allowed:
        detail = f"Use {' or '.join(allowed)}."
        result = ingest.error_result(405, "method_not_allowed", detail, network=network)
        result.extra["Allow"] = ", ".join(allowed)
        return ingest.record(inbound, result)
    try:
        raw = _postback_data(request)
    except InboundError as exc:
        return ingest.record(inbound, ingest.error_result(exc.status, exc.code, exc.detail))
    return ingest.conversion_ingest(raw, inbound)


@csrf_exempt
def conversion_postback(request: HttpRequest, network_key: str = "") -> HttpResponse:
    """``GET|POST /cv`` and ``/cv/<network key>``: a conversion from an affiliate network's
    S2S postback (see :mod:`tracker.ingest` for the rules).

    ``/cv/<key>`` names the network: its parameter mapping applies before the click ID is
    read, and its fixed response (``response_body``, text/plain) answers the accepted,
    duplicate and status-change outcomes. Answers: 200 ``ok`` | ``status_changed`` |
    ``duplicate``; 400 (see :class:`ConversionPostbackForm`, plus ``invalid_status``,
    ``invalid_timestamp``, ``invalid_json``, ``invalid_body``, ``too_many_fields``,
    ``invalid_request``); 403 ``forbidden_ip`` | ``forbidden_token`` | ``network_mismatch``;
    404 ``unknown_click_id`` | ``unknown_network``; 405 ``method_not_allowed``; 413
    ``body_too_large``; 503 ``unavailable`` (the database cannot be reached; with
    ``Retry-After``).
    """
    result = _ingest(request, Channel.S2S, network_key)
    if result.accepted and result.network is not None and result.network.response_body:
        return HttpResponse(result.network.response_body, content_type="text/plain; charset=utf-8")
    response = JsonResponse(result.body, status=result.status)
    for header in ("Allow", "Retry-After"):
        if header in result.extra:
            response[header] = result.extra[header]
    return response


@csrf_exempt
def conversion_pixel(request: HttpRequest) -> HttpResponse:
    """``GET /cv.gif``: the image pixel of a thank-you page. The same parameters as ``/cv``;
    the click ID is read from the click-ID cookie when not sent. Always answers the 1x1
    GIF (a broken image helps nobody); the outcome and any error are in the inbound log."""
    _ingest(request, Channel.PIXEL)
    response = HttpResponse(PIXEL_GIF, content_type="image/gif")
    response["Cache-Control"] = "no-store, max-age=0"
    return response


@csrf_exempt
def conversion_script(request: HttpRequest) -> HttpResponse:
    """``GET /cv.js``: the conversion script of a thank-you page (``<script src=...>``). As
    ``/cv.gif``, but answers JavaScript that pushes the outcome to
    ``window.postbackConversions`` (e.g. ``{"status": "ok", "conversion_id": 12}`` or
    ``{"error": "unknown_click_id", ...}``), always with 200."""
    result = _ingest(request, Channel.SCRIPT)
    payload = json.dumps(result.body).replace("<", "\\u003c")
    script = f"(window.postbackConversions = window.postbackConversions || []).push({payload});\n"
    response = HttpResponse(script, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "no-store, max-age=0"
    return response


def _error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def _masked(text: str, content_type: str = "") -> str:
    """``text`` (query string or body) with every secret masked (:mod:`postbacks.masking`:
    the network's token in any case, and any other parameter or JSON key named a secret)."""
    return mask_secrets(text)


def _logged_body(request: HttpRequest) -> str:
    if request.method != "POST":
        return ""
    try:
        raw = request.body[:LOG_TEXT_MAX]
    except (RequestDataTooBig, RawPostDataException):
        length = request.META.get("CONTENT_LENGTH") or "unknown"
        return f"(body not kept: {length} bytes)"
    text = services.storable(raw.decode("utf-8", "replace"))
    return _masked(text, request.content_type or "")
