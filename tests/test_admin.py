"""Admin pages an account manager uses: lists, filters, search, rule form validation."""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from postbacks.models import Attempt, Delivery, PostbackRule
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_attempt():
    click = factories.click(external_id="ext-777")
    rule = factories.rule("https://ts.example/?c={externalid}", sources=[click.traffic_source])
    delivery = Delivery.objects.create(
        rule=rule, event_type="conversion", click=click, traffic_source=click.traffic_source,
        idempotency_key="k", kind="s2s", url="https://ts.example/?c=ext-777",
        due_at=timezone.now(), status="failed", attempt_count=1, last_status_code=404,
    )  # fmt: skip
    return Attempt.objects.create(
        delivery=delivery, number=1, started_at=timezone.now(), method="GET", url=delivery.url,
        status_code=404, outcome="failed", error="HTTP 404",
    )  # fmt: skip


@pytest.mark.parametrize(
    "query",
    ["", "?outcome__exact=failed", "?http=4xx", "?http=none", "?q=ext-777", "?q=not-a-uuid",
     "?q=00000000-0000-4000-8000-000000000000"],
)  # fmt: skip
def test_postback_log_filters_and_search(admin_client, logged_attempt, query):
    response = admin_client.get(f"/admin/postbacks/attempt/{query}")
    assert response.status_code == 200
    shown = "ext-777" in response.content.decode()
    assert shown == (query in ("", "?outcome__exact=failed", "?http=4xx", "?q=ext-777"))


def test_search_by_click_id_and_txid(admin_client, logged_attempt):
    click_id = logged_attempt.delivery.click_id
    response = admin_client.get(f"/admin/postbacks/attempt/?q={click_id}")
    assert "ext-777" in response.content.decode()
    assert admin_client.get("/admin/postbacks/delivery/?q=ext-777").status_code == 200


def test_log_rows_are_read_only(admin_client, logged_attempt):
    assert admin_client.get("/admin/postbacks/attempt/add/").status_code == 403
    page = admin_client.get(f"/admin/postbacks/attempt/{logged_attempt.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content


def test_retry_action_reschedules_a_failed_delivery(admin_client, logged_attempt):
    delivery = logged_attempt.delivery
    admin_client.post(
        "/admin/postbacks/delivery/",
        {"action": "retry_now", "_selected_action": [delivery.pk]},
    )
    delivery.refresh_from_db()
    assert (delivery.status, delivery.max_attempts) == ("scheduled", 10)


def test_rule_form_rejects_unknown_macros_and_saves_conditions(admin_client):
    source = factories.traffic_source()
    data = {
        "name": "Taboola", "event_type": "conversion", "is_active": "on", "trigger": "both",
        "traffic_sources": [source.pk], "statuses": ["approved", "pending"],
        "conversion_types": "lead, sale", "delay_seconds": "0", "kind": "s2s",
        "http_method": "GET", "body_format": "none", "success_mode": "status",
        "url_template": "https://ts.example/?c={externalid}&r={revnue}",
        "timeout_seconds": "10", "max_attempts": "10", "retry_base_seconds": "60",
        "disable_after_failures": "0",
    }  # fmt: skip
    bad = admin_client.post("/admin/postbacks/postbackrule/add/", data)
    assert bad.status_code == 200
    assert "Unknown macro {revnue}; did you mean {revenue}?" in bad.content.decode()
    data["url_template"] = "https://ts.example/?c={externalid}&r={payout}"
    good = admin_client.post("/admin/postbacks/postbackrule/add/", data)
    assert good.status_code == 302
    rule = PostbackRule.objects.get()
    assert rule.statuses == ["approved", "pending"]
    assert rule.conversion_types == ["lead", "sale"]
    assert list(rule.traffic_sources.all()) == [source]


def test_campaign_page_shows_the_tracking_url(admin_client):
    campaign = factories.campaign()
    page = admin_client.get(f"/admin/campaigns/campaign/{campaign.pk}/change/").content.decode()
    assert f"/c/{campaign.key}?external_id={{click_id}}&amp;site={{site}}" in page


@pytest.mark.parametrize(
    "url",
    ["/admin/", "/admin/tracker/click/", "/admin/tracker/conversion/",
     "/admin/tracker/inboundrequest/",
     "/admin/campaigns/trafficsource/add/", "/admin/campaigns/offer/add/",
     "/admin/campaigns/campaign/add/", "/admin/postbacks/postbackrule/add/",
     "/admin/postbacks/delivery/?status__exact=failed&http=4xx"],
)  # fmt: skip
def test_admin_pages_render(admin_client, logged_attempt, url):
    assert admin_client.get(url).status_code == 200


def test_static_files_are_served_without_debug(settings, tmp_path, client):
    """As `make run` serves them: collected, hashed and served by WhiteNoise under gunicorn."""
    settings.STATIC_ROOT = tmp_path
    settings.WHITENOISE_USE_FINDERS = False
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    call_command("collectstatic", "--noinput", verbosity=0)

    login = client.get("/admin/login/").content.decode()
    css = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', login)
    assert css, login
    response = client.get(css.group(1))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    assert "immutable" in response["Cache-Control"]
    assert b"".join(response.streaming_content).strip()


def test_no_view_site_link_to_a_missing_page(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "View site" not in page


def test_demo_setup_refuses_outside_the_demo(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="local demo only"):
        call_command("demo_setup", stdout=StringIO())
    assert not get_user_model().objects.exists()


def test_demo_setup_creates_the_demo_with_its_flag(settings):
    settings.DEBUG = False
    out = StringIO()
    call_command("demo_setup", "--demo", stdout=out)
    assert get_user_model().objects.get(username="admin").check_password("admin")
    rules = PostbackRule.objects.filter(is_active=True)
    assert rules.count() == 3
    crm = rules.get(http_method="POST")
    assert (crm.body_format, crm.delay_seconds, crm.statuses) == ("json", 120, ["approved"])
    for rule in rules:
        rule.full_clean()  # every demo template passes the form's validation
    assert f"Campaign link:  {settings.TRACKER_BASE_URL}/c/" in out.getvalue()
