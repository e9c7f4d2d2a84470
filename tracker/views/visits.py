"""Visit endpoints: the click redirect ``/c/<key>`` and the impression pixel ``/i/<key>``."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.csrf import csrf_exempt

from tracker import services
from tracker.views.common import PIXEL_GIF, _django_refusal, client_ip, error


@csrf_exempt
def click(request: HttpRequest, campaign_key: str) -> HttpResponse:
    """``GET /c/<campaign_key>``: record a click, set the click-ID cookie, 302 to the offer.

    404 ``unknown_campaign``, 503 ``no_offer``, 405 ``method_not_allowed``, 400
    ``too_many_fields`` (more query parameters than ``DATA_UPLOAD_MAX_NUMBER_FIELDS``).
    """
    if request.method != "GET":
        response = error("method_not_allowed", "Use GET.", 405)
        response["Allow"] = "GET"
        return response
    try:
        query = request.GET
    except SuspiciousOperation as exc:
        refusal = _django_refusal(exc)
        return error(refusal.code, refusal.detail, refusal.status)
    campaign = services.campaign_for_click(campaign_key)
    if campaign is None:
        return error("unknown_campaign", f"No active campaign with key {campaign_key!r}.", 404)
    offer = campaign.choose_offer()
    if offer is None:
        return error("no_offer", "The campaign has no active offer.", 503)
    recorded, offer_url = services.click_record(
        campaign,
        offer,
        query,
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        referrer=request.META.get("HTTP_REFERER", ""),
        accept_language=request.META.get("HTTP_ACCEPT_LANGUAGE", ""),
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


def impression(request: HttpRequest, campaign_key: str) -> HttpResponse:
    """``GET /i/<campaign_key>``: record an impression, answer a 1x1 transparent GIF.

    Query parameters as for the click URL (external ID, custom variables). 404
    ``unknown_campaign`` (JSON), 405 ``method_not_allowed``, 400 ``too_many_fields``.
    """
    if request.method not in ("GET", "HEAD"):
        response = error("method_not_allowed", "Use GET.", 405)
        response["Allow"] = "GET, HEAD"
        return response
    try:
        query = request.GET
    except SuspiciousOperation as exc:
        refusal = _django_refusal(exc)
        return error(refusal.code, refusal.detail, refusal.status)
    campaign = services.campaign_for_click(campaign_key)
    if campaign is None:
        return error("unknown_campaign", f"No active campaign with key {campaign_key!r}.", 404)
    services.impression_record(
        campaign,
        query,
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        referrer=request.META.get("HTTP_REFERER", ""),
        accept_language=request.META.get("HTTP_ACCEPT_LANGUAGE", ""),
    )
    response = HttpResponse(PIXEL_GIF, content_type="image/gif")
    response["Cache-Control"] = "no-store, max-age=0"
    return response


def lander_click(request: HttpRequest) -> HttpResponse:
    """``GET /lp/click``: from a lander's call-to-action on to the click's offer."""
    return error("not_implemented", "Landers are not wired yet.", 404)
