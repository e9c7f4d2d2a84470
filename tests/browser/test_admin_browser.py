"""An account manager in a real browser (Debian's headless Chromium driven by Playwright):
logs in, creates a traffic source and its postback rule from a preset, sends a test postback
to a real receiver, opens a conversion's trace and the dashboard.

With ``SCREENSHOT_DIR`` set, the pages are saved there (the README's screenshots).
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from campaigns.models import TrafficSource
from postbacks.dashboard import clear_cache as dashboard_cache_clear
from postbacks.models import Delivery, PostbackRule
from tests import factories
from tracker import services

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def page(live_server):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package.")
        pytest.skip("Chromium is not installed (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls in between
    # are plain synchronous test code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        yield context.new_page()
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def shot(page, name: str) -> None:
    folder = os.environ.get("SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_manager_creates_a_rule_from_a_preset_tests_it_and_opens_the_trace(
    page, live_server, receiver, django_user_model
):
    django_user_model.objects.create_superuser("manager", "m@example.com", "secret-pass-1")
    # A conversion to test with and to trace: a lead sent pending, then approved.
    click = factories.click(external_id="tbl-abc-123")
    conversion = services.conversion_create(
        click, payout=Decimal("2.35"), txid="LEAD-1", status="pending"
    )
    services.conversion_status_change(conversion, "approved", source="s2s")

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "manager")
    page.fill("#id_password", "secret-pass-1")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/admin/")

    # Traffic source and rule from the Taboola preset.
    page.goto(f"{live_server.url}/admin/campaigns/trafficsource/")
    page.click("text=Add from preset")
    page.check("#id_preset_taboola")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    source = TrafficSource.objects.get(preset="taboola")
    rule = PostbackRule.objects.get(preset="taboola")
    assert list(rule.traffic_sources.all()) == [source]

    # Point the rule at the receiver (playing Taboola), fill the account-specific parts,
    # activate it and send a test postback with the traced conversion.
    page.goto(f"{live_server.url}/admin/postbacks/postbackrule/{rule.pk}/change/")
    template = page.input_value("#id_url_template")
    path = template.split("://", 1)[1].split("/", 1)[1]
    url = f"{receiver.url}/{path}"
    for placeholder in {p for p in url.split("=") if "REPLACE_WITH" in p}:
        url = url.replace(placeholder.split("&")[0], "lead")
    page.fill("#id_url_template", url)
    page.check("#id_is_active")
    page.fill("#pb-conversion", str(conversion.pk))
    page.click("#pb-preview-refresh")
    page.wait_for_function(
        "document.getElementById('pb-preview-request').textContent.includes('tbl-abc-123')"
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#pb-test-send")
    page.wait_for_function("document.getElementById('pb-test-status').textContent === '200'")
    shot(page, "rule-form")

    (received,) = receiver.wait_for(1)
    query = parse_qs(urlsplit(received.path).query)
    assert query["click-id"] == ["tbl-abc-123"]
    test_delivery = Delivery.objects.get(is_test=True)
    assert (test_delivery.status, test_delivery.conversion) == ("delivered", conversion)

    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    rule.refresh_from_db()
    assert rule.is_active and "lead" in rule.url_template

    # The trace: inbound requests, the status change and the test delivery with its answer.
    page.goto(f"{live_server.url}/admin/tracker/conversion/{conversion.pk}/change/")
    trace = page.inner_text("#trace")
    assert "pending → approved" in trace
    assert f"#{test_delivery.pk} (test)" in trace
    assert "HTTP 200" in trace
    shot(page, "trace")

    # A day of finished postbacks for two sources, one of them failing since 6 hours ago.
    outbrain = factories.traffic_source("Outbrain")
    now = timezone.now()
    for hour in range(24):
        for source, failing in ((click.traffic_source, False), (outbrain, hour < 6)):
            for n in range(3):
                status = "failed" if failing and n else "delivered"
                row = factories.delivery(
                    "https://ts.example/pb", status=status, traffic_source=source, click=click
                )
                Delivery.objects.filter(pk=row.pk).update(updated_at=now - timedelta(hours=hour))
    dashboard_cache_clear()  # the login's redirect to /admin/ cached an empty dashboard
    page.goto(f"{live_server.url}/admin/")
    dashboard = page.inner_text("#content")
    assert "Outbrain" in dashboard
    shot(page, "dashboard")
