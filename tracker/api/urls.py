"""``/api/v1/``: one router for every app's resources (each app's ``api.register``), the
OpenAPI 3 schema (drf-spectacular) and Swagger UI with its assets from
drf-spectacular-sidecar (no CDN)."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from campaigns import api as campaigns_api
from postbacks import api as postbacks_api
from tracker.api import views as tracker_api

router = DefaultRouter()
for module in (campaigns_api, postbacks_api, tracker_api):
    module.register(router)

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include(router.urls)),
]
