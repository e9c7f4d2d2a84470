from django.contrib import admin
from django.urls import include, path

from tracker import views
from tracker.views.crm import crm_status

admin.site.site_header = "Postback manager"
admin.site.site_title = "Postback manager"
admin.site.index_title = "Traffic sources, offers, campaigns and postbacks"
# Log tables need the width more than the app list does.
admin.site.enable_nav_sidebar = False
# No public site behind the tracker: no "View site" link (it led to a 404).
admin.site.site_url = None

urlpatterns = [
    path("c/<slug:campaign_key>", views.click, name="click"),
    path("i/<slug:campaign_key>", views.impression, name="impression"),
    path("lp/click", views.lander_click, name="lander-click"),
    path("cv", views.conversion_postback, name="conversion-postback"),
    path("cv.gif", views.conversion_pixel, name="conversion-pixel"),
    path("cv.js", views.conversion_script, name="conversion-script"),
    path("cv/<slug:network_key>", views.conversion_postback, name="network-postback"),
    path("crm/<int:rule_id>/status", crm_status, name="crm-status"),
    path("api/v1/", include("tracker.api.urls")),
    path("admin/", admin.site.urls),
]
