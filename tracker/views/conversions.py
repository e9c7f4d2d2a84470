"""Conversion endpoints: the S2S postback ``/cv``.

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
import re

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError, DataError, IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict, RawPostDataException
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from campaigns.models import status_from_text
from tracker import services
from tracker.forms import PARAM_FIELDS, ConversionPostbackForm
from tracker.models import Conversion, ConversionStatusChange, InboundRequest
from tracker.views.common import PIXEL_GIF, InboundError, _django_refusal, client_ip

logger = logging.getLogger(__name__)
LOG_TEXT_MAX = 4000
TOKEN_HEADER = "X-Postback-Token"
# The security token is masked in the inbound log (query strings, form and JSON bodies).
_TOKEN_IN_QUERY = re.compile(r"(?<![^&;])(token=)[^&;]*")
_TOKEN_IN_JSON = re.compile(r'("token"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}\s]*)')


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
    except (SuspiciousOperation, MultiPartParserError) as exc:
        raise _django_refusal(exc) from None
    data.setdefault("token", "")
    if not data["token"]:
        data["token"] = request.headers.get(TOKEN_HEADER, "")
    return data


@csrf_exempt
def conversion_postback(request: HttpRequest, network_key: str = "") -> JsonResponse:
    """``GET|POST /cv``: register a conversion from an affiliate network's S2S postback.

    The click lookup, the conversion (or its status change), its deliveries and the
    inbound-log row are written in one transaction with one commit: a conversion never
    exists without its log row, and when anything fails nothing is committed and the
    (logged) answer is an error. A repeat for the same click and txid with a different
    status is a status change (``status_changed``); with the same status, or none, it is a
    ``duplicate``.
    Answers: 200 ``ok`` | ``status_changed`` | ``duplicate``; 400 (see
    :class:`ConversionPostbackForm`, plus ``invalid_status``, ``invalid_json``,
    ``invalid_body``, ``too_many_fields``, ``invalid_request``); 403 ``forbidden_ip`` |
    ``forbidden_token``; 404 ``unknown_click_id``; 405 ``method_not_allowed``; 413
    ``body_too_large``; 503 ``unavailable``.
    """
    if request.method not in ("GET", "POST"):
        response = _answer(request, 405, _error_body("method_not_allowed", "Use GET or POST."))
        response["Allow"] = "GET, POST"
        return response
    try:
        raw = _postback_data(request)
    except InboundError as exc:
        return _answer(request, exc.status, _error_body(exc.code, exc.detail))
    form = ConversionPostbackForm(raw)
    if not form.is_valid():
        return _answer(request, 400, _error_body(form.error_code(), form.error_detail()))
    try:
        try:
            return _conversion_write(request, form, raw)
        except IntegrityError:
            # A concurrent request inserted the same (click, txid) after our lookup: the
            # transaction was rolled back; the second run sees it (duplicate or change).
            return _conversion_write(request, form, raw)
    except DataError as exc:
        return _answer(request, 400, _error_body("invalid_request", f"Refused: {exc}"))
    except DatabaseError:
        logger.exception("Conversion postback not recorded: database error.")
        body = _error_body("unavailable", "The conversion could not be recorded; retry later.")
        return _answer(request, 503, body)


def _conversion_write(
    request: HttpRequest, form: ConversionPostbackForm, raw: QueryDict
) -> JsonResponse:
    """The transactional part of ``/cv``: lookup, checks, conversion or status change,
    deliveries, log row."""
    with transaction.atomic():
        txid = form.cleaned_data["txid"]
        click, existing_id, has_conversion = services.click_for_conversion(
            form.click_uuid, services.dedup_key(txid, form.cleaned_data["ct"])
        )
        if click is None:
            detail = f"No click with ID {form.click_uuid}."
            return _answer(request, 404, _error_body("unknown_click_id", detail), strict=True)
        network = click.offer.affiliate_network if click.offer else None
        if network is not None:
            ip = client_ip(request)
            if not network.ip_allowed(ip):
                detail = f"{ip or 'This address'} is not allowed for network {network.pk}."
                return _answer(request, 403, _error_body("forbidden_ip", detail), strict=True)
            if not network.token_matches(form.cleaned_data["token"]):
                detail = f"Missing or wrong security token for network {network.pk}."
                return _answer(request, 403, _error_body("forbidden_token", detail), strict=True)
            if network.param_map:
                # The network's own parameter names, now that the click names the network.
                form = ConversionPostbackForm(network.map_params(raw))
                if not form.is_valid():
                    body = _error_body(form.error_code(), form.error_detail())
                    return _answer(request, 400, body, strict=True)
                if True:
                    txid = form.cleaned_data["txid"]
                    click, existing_id, has_conversion = services.click_for_conversion(
                        form.click_uuid, services.dedup_key(txid, form.cleaned_data["ct"])
                    )
        data = form.cleaned_data
        status = status_from_text(data["status"] or "approved", network and network.status_map)
        if status is None:
            pairs = sorted((network.status_map or {}).items()) if network else []
            mapping = f" or the network's values {', '.join(f'{k}={v}' for k, v in pairs)}"
            detail = (
                f"Unknown status {data['status']!r}: use {', '.join(Conversion.Status.values)}"
                f" (any case){mapping if pairs else ''}."
            )
            return _answer(request, 400, _error_body("invalid_status", detail), strict=True)
        if existing_id is not None:
            return _status_update(request, existing_id, status if data["status"] else "", data)
        conversion = services.conversion_create(
            click,
            payout=data["payout"],
            currency=data["payout_currency"],
            txid=txid,
            conversion_type=data["ct"],
            status=status,
            params=form.params(),
            rejection_reason=data["rejection_reason"] if status == "rejected" else "",
            is_first=not has_conversion,
        )
        body = {"status": "ok", "conversion_id": conversion.pk}
        return _answer(request, 200, body, conversion_id=conversion.pk, strict=True)


def _status_update(
    request: HttpRequest, conversion_id: int, status: str, data: dict
) -> JsonResponse:
    """A repeat postback for an existing conversion: a status change, or a duplicate when
    no status or the same one was sent."""
    conversion = Conversion.objects.select_related(
        "click__campaign", "click__offer__affiliate_network", "click__traffic_source"
    ).get(pk=conversion_id)
    change = None
    if status:
        change = services.conversion_status_change(
            conversion,
            status,
            source=ConversionStatusChange.Source.POSTBACK,
            rejection_reason=data["rejection_reason"],
        )
    if change is None:
        body = {"status": "duplicate", "conversion_id": conversion_id}
        return _answer(request, 200, body, conversion_id=conversion_id, strict=True)
    body = {
        "status": "status_changed",
        "conversion_id": conversion_id,
        "previous_status": change.old_status,
        "new_status": change.new_status,
    }
    return _answer(request, 200, body, conversion_id=conversion_id, strict=True, change=change)


def _error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def _masked(text: str, content_type: str = "") -> str:
    if "token" not in text:
        return text
    if content_type == "application/json":
        return _TOKEN_IN_JSON.sub(r'\1"***"', text)
    return _TOKEN_IN_QUERY.sub(r"\1***", text)


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


def _answer(
    request: HttpRequest,
    status: int,
    body: dict,
    *,
    conversion_id: int | None = None,
    strict: bool = False,
    change: ConversionStatusChange | None = None,
) -> JsonResponse:
    """Write the request and its answer to the inbound log, then answer.

    ``strict`` (inside ``_conversion_write``): the row joins the conversion's transaction
    and a failure to write it raises, so that nothing is committed. Otherwise a failure is
    logged and the answer is given anyway.
    """
    if status >= 400:
        outcome = InboundRequest.Outcome.REJECTED
    elif body["status"] == "ok":
        outcome = InboundRequest.Outcome.ACCEPTED
    elif body["status"] == "status_changed":
        outcome = InboundRequest.Outcome.STATUS_CHANGED
    else:
        outcome = InboundRequest.Outcome.DUPLICATE
    row = InboundRequest(
        endpoint=services.storable(request.path)[:32],
        method=services.storable(request.method or "")[:8],
        query=_masked(services.storable(request.META.get("QUERY_STRING", ""))[:LOG_TEXT_MAX]),
        body=_logged_body(request),
        ip=client_ip(request),
        user_agent=services.storable(request.META.get("HTTP_USER_AGENT", ""))[:LOG_TEXT_MAX],
        response_status=status,
        outcome=outcome,
        error_code=body.get("error", ""),
        detail=services.storable(body.get("detail", ""))[:LOG_TEXT_MAX],
        conversion_id=conversion_id,
    )
    try:
        row.save(force_insert=True)
        if change is not None:
            change.inbound_request = row
            change.save(update_fields=["inbound_request"])
    except DatabaseError:
        if strict:
            raise
        logger.warning("Inbound request not logged: database error.", exc_info=True)
    return JsonResponse(body, status=status)


def conversion_pixel(request: HttpRequest) -> HttpResponse:
    """``GET /cv.gif``: image pixel (not wired yet)."""
    return HttpResponse(PIXEL_GIF, content_type="image/gif")


def conversion_script(request: HttpRequest) -> HttpResponse:
    """``GET /cv.js``: conversion script (not wired yet)."""
    return HttpResponse("", content_type="text/javascript")
