"""Inbound HTTP endpoints: click redirect and S2S conversion postback.

Answers per DESIGN.md: 200 with ``{"status": ...}`` on success, 4xx with
``{"error": "<code>", "detail": "..."}`` on bad input, never 500 on input.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods
from ipware import get_client_ip

from tracker import services
from tracker.forms import ConversionPostbackForm
from tracker.models import Conversion, InboundRequest

LOG_TEXT_MAX = 4000


def error(code: str, detail: str, status: int) -> JsonResponse:
    """A 4xx/5xx answer in the documented shape."""
    return JsonResponse({"error": code, "detail": detail}, status=status)


def client_ip(request: HttpRequest) -> str | None:
    ip, _routable = get_client_ip(request, proxy_count=settings.TRACKER_PROXY_COUNT)
    return ip


@require_GET
def click(request: HttpRequest, campaign_key: str) -> HttpResponse:
    """``GET /c/<campaign_key>``: record a click, set the click-ID cookie, 302 to the offer."""
    campaign = services.campaign_for_click(campaign_key)
    if campaign is None:
        return error("unknown_campaign", f"No active campaign with key {campaign_key!r}.", 404)
    offer = campaign.choose_offer()
    if offer is None:
        return error("no_offer", "The campaign has no active offer.", 503)
    recorded, offer_url = services.click_record(
        campaign,
        offer,
        request.GET,
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
        referrer=request.headers.get("Referer", ""),
    )
    response = HttpResponseRedirect(offer_url)
    response.set_cookie(
        settings.CLICK_COOKIE_NAME,
        str(recorded.pk),
        max_age=settings.CLICK_COOKIE_MAX_AGE,
        samesite="Lax",
        secure=request.is_secure(),
    )
    return response


def _postback_data(request: HttpRequest) -> QueryDict:
    """Query string and form or JSON body, merged (body wins). Raises ValueError on bad JSON."""
    data = request.GET.copy()
    if request.method == "POST":
        if request.content_type == "application/json":
            payload = json.loads(request.body or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("The JSON body must be an object.")
            for key, value in payload.items():
                data[key] = "" if value is None else str(value)
        else:
            data.update(request.POST)
    return data


@csrf_exempt
@require_http_methods(["GET", "POST"])
def conversion_postback(request: HttpRequest) -> JsonResponse:
    """``GET|POST /cv``: register a conversion from an affiliate network's S2S postback."""
    request.body  # noqa: B018 -- cache the raw body for the inbound log before parsing it
    try:
        form = ConversionPostbackForm(_postback_data(request))
        valid = form.is_valid()
    except (ValueError, UnicodeDecodeError) as exc:
        return _answer(request, 400, {"error": "invalid_json", "detail": str(exc)})
    if not valid:
        code = form.error_code()
        status = 404 if code == "unknown_click_id" else 400
        return _answer(request, status, {"error": code, "detail": form.error_detail()})
    data = form.cleaned_data
    conversion, created = services.conversion_register(
        form.click,
        payout=data["payout"],
        currency=data["payout_currency"],
        txid=data["txid"].strip(),
        conversion_type=data["ct"].strip(),
        status=data["status"],
        params=form.params(),
    )
    body = {"status": "ok" if created else "duplicate", "conversion_id": conversion.pk}
    return _answer(request, 200, body, conversion)


def _answer(
    request: HttpRequest, status: int, body: dict, conversion: Conversion | None = None
) -> JsonResponse:
    """Write the request and its answer to the inbound log, then answer."""
    if status >= 400:
        outcome = InboundRequest.Outcome.REJECTED
    elif body["status"] == "ok":
        outcome = InboundRequest.Outcome.ACCEPTED
    else:
        outcome = InboundRequest.Outcome.DUPLICATE
    posted = request.body[:LOG_TEXT_MAX] if request.method == "POST" else b""
    InboundRequest.objects.create(
        endpoint=request.path[:32],
        method=request.method or "",
        query=request.META.get("QUERY_STRING", "")[:LOG_TEXT_MAX],
        body=posted.decode("utf-8", "replace"),
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", "")[:LOG_TEXT_MAX],
        response_status=status,
        outcome=outcome,
        error_code=body.get("error", ""),
        detail=body.get("detail", ""),
        conversion=conversion,
    )
    return JsonResponse(body, status=status)
