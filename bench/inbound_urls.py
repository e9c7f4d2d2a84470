"""The project's URLs plus the comparison views of ``bench/inbound.py``.

* ``/bench/hello``: a hello-world Django view, the ceiling of the server configuration.
* ``/bench/naive-click/<campaign>/<source>/<offer>``: what a naive click endpoint does at
  least: one ORM INSERT (ids taken from the URL, nothing looked up) and a 302.
* ``/bench/naive-cv/<rule>?click_id=…&payout=…&txid=…``: what a naive conversion postback
  does at least, written with the ORM as the Django tutorial would: in one transaction, one
  SELECT of the click (``Click.objects.get``), then ``objects.create`` of the conversion,
  of one delivery for the rule named in the URL (its URL template filled with
  ``str.replace``) and of the inbound-log row; 404 for an unknown click. No validation
  beyond the UUID and the decimal, no network checks, no deduplication beyond the unique
  constraint, no rule matching or macro catalogue, no wake-up publish.

``BENCH_WAKE=0`` (read by ``bench.inbound_settings``) replaces ``postbacks.services.wake``
with a no-op in the server's processes, to measure ``/cv`` without the Celery publish.
"""

import uuid
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import path
from django.utils import timezone

from postbacks import services as postback_services
from postbacks.models import Delivery
from tracker.models import Click, Conversion, InboundRequest
from tracker.urls import urlpatterns as project_urlpatterns

if not settings.BENCH_WAKE:
    postback_services.wake = lambda countdown=0: False


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"hello", content_type="text/plain")


def naive_click(request: HttpRequest, campaign: int, source: int, offer: int) -> HttpResponse:
    click = Click.objects.create(
        campaign_id=campaign,
        traffic_source_id=source,
        offer_id=offer,
        external_id=request.GET.get("external_id", ""),
        ip=request.META.get("REMOTE_ADDR"),
        user_agent=request.headers.get("User-Agent", ""),
    )
    return HttpResponseRedirect(f"https://offer.example/?s2={click.pk}")


def naive_conversion(request: HttpRequest, rule: int) -> HttpResponse:
    try:
        click_id = uuid.UUID(request.GET.get("click_id", ""))
        payout = Decimal(request.GET.get("payout") or "0")
    except (ValueError, InvalidOperation):
        return JsonResponse({"error": "invalid_request", "detail": "Bad click ID or payout."}, 400)
    txid = request.GET.get("txid", "")
    with transaction.atomic():
        try:
            click = Click.objects.get(pk=click_id)
        except Click.DoesNotExist:
            return JsonResponse({"error": "unknown_click_id", "detail": "No such click."}, 404)
        conversion = Conversion.objects.create(
            click=click,
            txid=txid,
            dedup_key=f"t:{txid}",
            status=request.GET.get("status") or "approved",
            payout=payout,
            converted_at=timezone.now(),
        )
        url = f"http://127.0.0.1:9/postback?c={click.external_id}&p={payout}"
        Delivery.objects.create(
            rule_id=rule,
            event_type="conversion",
            click=click,
            conversion=conversion,
            traffic_source_id=click.traffic_source_id,
            idempotency_key=f"{rule}:conversion:{conversion.pk}:1",
            kind="s2s",
            url=url,
            host="127.0.0.1:9",
            due_at=timezone.now(),
        )
        InboundRequest.objects.create(
            click_id=str(click.pk),
            endpoint=request.path,
            method=request.method,
            query=request.META.get("QUERY_STRING", ""),
            ip=request.META.get("REMOTE_ADDR"),
            response_status=200,
            outcome="accepted",
            conversion=conversion,
        )
    return JsonResponse({"status": "ok", "conversion_id": conversion.pk})


urlpatterns = [
    *project_urlpatterns,
    path("bench/hello", hello),
    path("bench/naive-click/<int:campaign>/<int:source>/<int:offer>", naive_click),
    path("bench/naive-cv/<int:rule>", naive_conversion),
]
