from django.contrib import admin
from django.urls import include, path

from postbacks.admin.status import status_view
from tracker import views
from tracker.views.crm import crm_status
from tracker.views.health import alive, prometheus, ready

admin.site.site_header = "Postback manager"
admin.site.site_title = "Postback manager"
admin.site.index_title = "Traffic sources, offers, campaigns and postbacks"
# Log tables need the width more than the app list does.
admin.site.enable_nav_sidebar = False
# No public site behind the tracker: no "View site" link (it led to a 404).
admin.site.site_url = None

urlpatterns = [
    path("health", alive, name="health"),
    path("ready", ready, name="ready"),
    path("metrics", prometheus, name="metrics"),
    path("c/<slug:campaign_key>", views.click, name="click"),
    path("i/<slug:campaign_key>", views.impression, name="impression"),
    path("lp/click", views.lander_click, name="lander-click"),
    path("cv", views.conversion_postback, name="conversion-postback"),
    path("cv.gif", views.conversion_pixel, name="conversion-pixel"),
    path("cv.js", views.conversion_script, name="conversion-script"),
    path("cv/<slug:network_key>", views.conversion_postback, name="network-postback"),
    path("crm/<int:rule_id>/status", crm_status, name="crm-status"),
    path("api/v1/", include("tracker.api.urls")),
    path("admin/status/", admin.site.admin_view(status_view), name="postbacks-status"),
    path("admin/", admin.site.urls),
]
