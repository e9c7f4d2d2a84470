"""``/api/v1/``: one router for every app's resources (each app's ``api.register``), the
OpenAPI 3 schema (drf-spectacular) and Swagger UI with its assets from
drf-spectacular-sidecar (no CDN); any other path is a JSON 404."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from campaigns import api as campaigns_api
from postbacks import api as postbacks_api
from tracker.api import routes as tracker_api

router = DefaultRouter()
for module in (campaigns_api, postbacks_api, tracker_api):
    module.register(router)


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other ``/api/v1/...`` path: 404 ``{"error": "not_found", "detail": ...}`` in the
    API's shape (not Django's HTML page). A path missing only its trailing slash is
    redirected to it (301, GET and HEAD), as Django's ``APPEND_SLASH`` would."""
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            if request.method in ("GET", "HEAD"):
                query = request.META.get("QUERY_STRING", "")
                return HttpResponsePermanentRedirect(
                    request.path + "/" + (f"?{query}" if query else "")
                )
            detail = f"No API resource at {request.path}; did you mean {request.path}/?"
            return JsonResponse({"error": "not_found", "detail": detail}, status=404)
    detail = f"No API resource at {request.path}."
    return JsonResponse({"error": "not_found", "detail": detail}, status=404)


urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include(router.urls)),
    re_path(r"^(?P<rest>.*)$", not_found, name="api-not-found"),
]
