"""The project's URLs plus two comparison views for ``bench/inbound.py``.

* ``/bench/hello``: a hello-world Django view, the ceiling of the server configuration.
* ``/bench/naive-click/<campaign>/<source>/<offer>``: what a naive click endpoint does at
  least: one ORM INSERT (ids taken from the URL, nothing looked up) and a 302.
"""

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path

from tracker.models import Click
from tracker.urls import urlpatterns as project_urlpatterns


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


urlpatterns = [
    *project_urlpatterns,
    path("bench/hello", hello),
    path("bench/naive-click/<int:campaign>/<int:source>/<int:offer>", naive_click),
]
