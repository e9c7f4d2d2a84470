"""``POST /crm/<rule id>/status``: the CRM status sync back (see :mod:`postbacks.crm`)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from postbacks import crm
from tracker import ingest, services
from tracker.views.common import client_ip

LOG_TEXT_MAX = 4000


@csrf_exempt
def crm_status(request: HttpRequest, rule_id: int) -> JsonResponse:
    """Read the body (at most ``crm.BODY_MAX_BYTES``, never more from the socket) and hand
    it to :func:`postbacks.crm.status_sync`; 405 for another method, 413 for a larger body,
    both logged. Answers JSON (see :mod:`postbacks.crm`)."""
    inbound = ingest.Inbound(
        channel=crm.CHANNEL,
        endpoint=request.path,
        http_method=request.method or "",
        ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )
    if request.method != "POST":
        result = crm.refusal_result(405, "method_not_allowed", "Use POST.")
        response = JsonResponse(ingest.record(inbound, result).body, status=405)
        response["Allow"] = "POST"
        return response
    try:
        announced = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        announced = 0
    body = b"" if announced > crm.BODY_MAX_BYTES else request.read(crm.BODY_MAX_BYTES + 1)
    if announced > crm.BODY_MAX_BYTES or len(body) > crm.BODY_MAX_BYTES:
        inbound.body = f"(body not kept: over {crm.BODY_MAX_BYTES} bytes)"
        detail = f"The body is over {crm.BODY_MAX_BYTES} bytes."
        result = crm.refusal_result(413, "body_too_large", detail)
        return JsonResponse(ingest.record(inbound, result).body, status=413)
    inbound.body = services.storable(body[:LOG_TEXT_MAX].decode("utf-8", "replace"))
    result = crm.status_sync(rule_id, body, request.headers, inbound)
    return JsonResponse(result.answer or result.body, status=result.status)
