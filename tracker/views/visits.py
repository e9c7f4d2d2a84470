"""Visit endpoints: the click redirect ``/c/<key>``, the impression pixel ``/i/<key>`` and the
lander click-through ``/lp/click``.

``HEAD`` is answered like ``GET`` (status, ``Location``, headers; no body) but records
nothing: link checkers and ad-review bots send it, and must not count as visits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TypedDict

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from campaigns import services as campaign_cache
from campaigns.models import Campaign
from tracker import macros, services
from tracker.models import Click, Impression
from tracker.views.common import (
    PIXEL_GIF,
    _django_refusal,
    click_id_from_cookie,
    client_ip,
    error,
)

READ_METHODS = ("GET", "HEAD")


def _method_not_allowed() -> HttpResponse:
    response = error("method_not_allowed", "Use GET.", 405)
    response["Allow"] = ", ".join(READ_METHODS)
    return response


def _as_head(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """``response`` as the answer to ``request``: for HEAD, the same status and headers
    (``Content-Length`` of the body GET would get) without the body."""
    if request.method == "HEAD":
        response["Content-Length"] = str(len(response.content))
        response.content = b""
    return response


class _VisitMeta(TypedDict):
    ip: str | None
    user_agent: str
    referrer: str
    accept_language: str


def _visit_meta(request: HttpRequest) -> _VisitMeta:
    return {
        "ip": client_ip(request),
        "user_agent": request.META.get("HTTP_USER_AGENT", ""),
        "referrer": request.META.get("HTTP_REFERER", ""),
        "accept_language": request.META.get("HTTP_ACCEPT_LANGUAGE", ""),
    }


def set_click_cookie(request: HttpRequest, response: HttpResponse, click_id: object) -> None:
    """Set the click-ID cookie (``CLICK_COOKIE_NAME``) that ``/lp/click``, ``/cv.gif`` and
    ``/cv.js`` read back.

    Over HTTPS it is ``SameSite=None; Secure``: the conversion pixel sits on the offer's
    thank-you page, another site, and a ``Lax`` cookie is not sent with such a cross-site
    image or script request. Browsers refuse ``SameSite=None`` without ``Secure``, so over
    plain HTTP (local demo) it stays ``Lax`` (then only same-site requests carry it).
    """
    secure = request.is_secure()
    response.set_cookie(
        settings.CLICK_COOKIE_NAME,
        str(click_id),
        max_age=settings.CLICK_COOKIE_MAX_AGE,
        samesite="None" if secure else "Lax",
        secure=secure,
    )


def _fallback(campaign: Campaign | None) -> HttpResponse | None:
    """A 302 to the campaign's fallback URL; None when it has none."""
    if campaign is None or not campaign.fallback_url:
        return None
    return HttpResponseRedirect(campaign.fallback_url)


@csrf_exempt
def click(request: HttpRequest, campaign_key: str) -> HttpResponse:
    """``GET /c/<campaign_key>``: record a click, set the click-ID cookie, 302 to the
    campaign's lander (when it has an active one) or to the chosen offer, each URL with the
    click's macros filled in (``{click_id}``...). The offer is chosen here (weighted
    rotation) and stored on the click, lander or not.

    Paused campaign: 302 to its fallback URL, nothing recorded; without a fallback 404
    ``unknown_campaign``. No active offer: 302 to the fallback URL, else 503 ``no_offer``.
    400 ``external_id_too_long`` (over ``EXTERNAL_ID_MAX`` characters; nothing recorded),
    400 ``too_many_fields`` (more query parameters than ``DATA_UPLOAD_MAX_NUMBER_FIELDS``),
    404 ``unknown_campaign``, 405 ``method_not_allowed``. ``HEAD``: the same answer, with
    the redirect carrying a click ID that is never recorded, and no cookie.
    """
    if request.method not in READ_METHODS:
        return _method_not_allowed()
    try:
        query = request.GET
    except SuspiciousOperation as exc:
        refusal = _django_refusal(exc)
        return error(refusal.code, refusal.detail, refusal.status)
    return _as_head(request, _click(request, campaign_key, query))


def _click(request: HttpRequest, campaign_key: str, query: Mapping[str, str]) -> HttpResponse:
    campaign = services.campaign_for_click(campaign_key)
    if campaign is None:
        return error("unknown_campaign", f"No campaign with key {campaign_key!r}.", 404)
    if not campaign.is_active:
        detail = f"Campaign {campaign_key!r} is paused and has no fallback URL."
        return _fallback(campaign) or error("unknown_campaign", detail, 404)
    offer = campaign.choose_offer()
    if offer is None:
        return _fallback(campaign) or error("no_offer", "The campaign has no active offer.", 503)
    try:
        if request.method == "HEAD":
            # Built exactly as click_record builds it (same checks), but never saved.
            visit = services._visit(Click, campaign, query, offer=offer, **_visit_meta(request))
            target = macros.render(offer.url, macros.build_context(visit))
        else:
            visit, target = services.click_record(campaign, offer, query, **_visit_meta(request))
    except services.ExternalIdTooLong as exc:
        return error("external_id_too_long", str(exc), 400)
    if visit.lander is not None:
        target = macros.render(visit.lander.url, macros.build_context(visit))
    response = HttpResponseRedirect(target)
    if request.method == "GET":
        set_click_cookie(request, response, visit.pk)
    return response


@csrf_exempt
def impression(request: HttpRequest, campaign_key: str) -> HttpResponse:
    """``GET /i/<campaign_key>``: record an impression, answer a 1x1 transparent GIF.

    Query parameters as for the click URL (external ID, custom variables). 404
    ``unknown_campaign`` (JSON; also for a paused campaign: nothing is recorded), 400
    ``external_id_too_long`` (nothing recorded), 405 ``method_not_allowed``, 400
    ``too_many_fields``. ``HEAD``: the same answer, nothing recorded.
    """
    if request.method not in READ_METHODS:
        return _method_not_allowed()
    try:
        query = request.GET
    except SuspiciousOperation as exc:
        refusal = _django_refusal(exc)
        return error(refusal.code, refusal.detail, refusal.status)
    return _as_head(request, _impression(request, campaign_key, query))


def _impression(request: HttpRequest, campaign_key: str, query: Mapping[str, str]) -> HttpResponse:
    campaign = services.campaign_for_click(campaign_key)
    if campaign is None or not campaign.is_active:
        state = "no campaign" if campaign is None else "a paused campaign"
        return error("unknown_campaign", f"{campaign_key!r} is {state}.", 404)
    try:
        if request.method == "HEAD":
            services._visit(Impression, campaign, query, **_visit_meta(request))
        else:
            services.impression_record(campaign, query, **_visit_meta(request))
    except services.ExternalIdTooLong as exc:
        return error("external_id_too_long", str(exc), 400)
    response = HttpResponse(PIXEL_GIF, content_type="image/gif")
    response["Cache-Control"] = "no-store, max-age=0"
    return response


@csrf_exempt
def lander_click(request: HttpRequest) -> HttpResponse:
    """``GET /lp/click``: from a lander's call-to-action on to the click's offer.

    The click ID is the first well-formed UUID of the ``click_id`` parameter, the
    ``cf_click_id`` parameter and the click-ID cookie (so a static page may link to plain
    ``/lp/click``). The first time, ``lander_clicked_at`` is set (one conditional UPDATE);
    then 302 to the click's offer URL with the click's macros filled in. When the click ID
    came as a parameter and differs from the cookie, the cookie is set to it.

    Errors send the visitor to the campaign's fallback URL when the campaign is known (the
    click's, or the one whose key is in the optional ``campaign`` parameter), else: 400
    ``missing_click_id`` | ``invalid_click_id``, 404 ``unknown_click_id``, 503 ``no_offer``
    (the click's offer was deleted or deactivated), 405 ``method_not_allowed``, 400
    ``too_many_fields``. ``HEAD``: the same answer without the UPDATE or the cookie.
    """
    if request.method not in READ_METHODS:
        return _method_not_allowed()
    try:
        query = request.GET
    except SuspiciousOperation as exc:
        refusal = _django_refusal(exc)
        return error(refusal.code, refusal.detail, refusal.status)
    return _as_head(request, _lander_click(request, query))


def _named_campaign(query: Mapping[str, str]) -> Campaign | None:
    key = (query.get("campaign") or "").strip()
    return services.campaign_for_click(key) if key and len(key) <= 32 else None


def _lander_click(request: HttpRequest, query: Mapping[str, str]) -> HttpResponse:
    cookie = click_id_from_cookie(request)
    sent = [(query.get(name) or "").strip() for name in ("click_id", "cf_click_id")]
    click_id = None
    for candidate in (*sent, cookie):
        try:
            click_id = uuid.UUID(candidate[:64])
            break
        except ValueError:
            continue
    if click_id is None:
        if any(sent) or cookie:
            code, detail = "invalid_click_id", "The click ID is not a click ID of ours (UUID)."
        else:
            code, detail = "missing_click_id", "Send click_id, or keep the click-ID cookie."
        return _fallback(_named_campaign(query)) or error(code, detail, 400)
    visit = Click.objects.filter(pk=click_id).first()
    if visit is None and services.click_buffered(click_id):
        visit = Click.objects.filter(pk=click_id).first()
    if visit is None:
        detail = "No click has this click ID."
        return _fallback(_named_campaign(query)) or error("unknown_click_id", detail, 404)
    campaign = campaign_cache.campaign(visit.campaign_id)
    offer = campaign_cache.offer(visit.offer_id) if visit.offer_id else None
    if offer is None or not offer.is_active:
        detail = "The click's offer was deleted or deactivated."
        return _fallback(campaign) or error("no_offer", detail, 503)
    visit.offer = offer
    source = campaign_cache.traffic_source(visit.traffic_source_id)
    if source is not None:
        visit.traffic_source = source
    if campaign is not None:
        visit.campaign = campaign
    if request.method == "GET" and visit.lander_clicked_at is None:
        Click.objects.filter(pk=visit.pk, lander_clicked_at__isnull=True).update(
            lander_clicked_at=timezone.now()
        )
    response = HttpResponseRedirect(macros.render(offer.url, macros.build_context(visit)))
    if request.method == "GET" and cookie != str(visit.pk):
        set_click_cookie(request, response, visit.pk)
    return response
