"""The postbacks dashboard on the admin index: figures per source, success rate chart, banner."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postbacks import dashboard
from postbacks.models import Delivery
from tests import factories

pytestmark = pytest.mark.django_db


def finished(source, status: str, hours_ago: float, count: int = 1, **fields) -> None:
    for _ in range(count):
        made = factories.delivery(
            "https://ts.example/pb", traffic_source=source, status=status, **fields
        )
        moment = timezone.now() - timedelta(hours=hours_ago)
        Delivery.objects.filter(pk=made.pk).update(updated_at=moment)


@pytest.fixture(autouse=True)
def _no_cached_figures():
    dashboard.clear_cache()
    yield
    dashboard.clear_cache()


@pytest.fixture
def sources():
    mgid = factories.traffic_source("MGID")
    outbrain = factories.traffic_source("Outbrain")
    quiet = factories.traffic_source("Quiet")
    # MGID: 3 delivered and 1 failed today, 2 failed 3 days ago, 5 delivered 8 days ago.
    finished(mgid, "delivered", 0.5, 2)
    finished(mgid, "delivered", 20)
    finished(mgid, "failed", 1)
    finished(mgid, "failed", 72, 2)
    finished(mgid, "delivered", 8 * 24, 5)
    # Outbrain: 4 failed in the last hour, 1 delivered 5 days ago.
    finished(outbrain, "failed", 0.1, 4)
    finished(outbrain, "delivered", 5 * 24)
    # Neither counted: still waiting, cancelled, a test send from the rule form.
    finished(mgid, "scheduled", 1)
    finished(mgid, "cancelled", 1)
    finished(outbrain, "delivered", 1, is_test=True)
    finished(quiet, "delivered", 10 * 24)
    return mgid, outbrain, quiet


def test_figures_per_source_for_24_hours_and_7_days(sources):
    figures = dashboard.compute()
    rows = {row.name: row for row in figures["sources"]}
    assert set(rows) == {"MGID", "Outbrain"}
    assert (rows["MGID"].day.delivered, rows["MGID"].day.failed) == (3, 1)
    assert (rows["MGID"].week.delivered, rows["MGID"].week.failed) == (3, 3)
    assert (rows["Outbrain"].day.delivered, rows["Outbrain"].day.failed) == (0, 4)
    assert (rows["Outbrain"].week.delivered, rows["Outbrain"].week.failed) == (1, 4)
    assert rows["MGID"].day.rate_text == "75.0 %"
    assert rows["Outbrain"].day.rate == 0
    # The most failures today first: what is broken is at the top.
    assert [row.name for row in figures["sources"]] == ["Outbrain", "MGID"]
    assert (figures["day_total"].delivered, figures["day_total"].failed) == (3, 5)
    assert (figures["week_total"].delivered, figures["week_total"].failed) == (4, 7)


def test_success_rate_chart_buckets(sources):
    figures = dashboard.compute()
    day_bars = figures["day_chart"]["bars"]
    week_bars = figures["week_chart"]["bars"]
    assert len(day_bars) == 24 and len(week_bars) == 28
    # Whatever the minute, one hour holds Outbrain's 4 failures and at most 3 deliveries
    # (red), and 20 hours ago MGID's delivery alone (green).
    assert any(bar.colour == "#c62828" and "failed" in bar.title for bar in day_bars)
    assert any(bar.colour == "#2e7d32" and "100.0 %" in bar.title for bar in day_bars)
    empty = [bar for bar in day_bars if "no postbacks" in bar.title]
    assert empty and all(bar.colour == "#bdbdbd" for bar in empty)
    assert sum("no postbacks" not in bar.title for bar in week_bars) >= 3


def test_figures_are_one_cheap_aggregate(sources):
    with CaptureQueriesContext(connection) as queries:
        dashboard.compute()
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2  # the aggregate, and the names of the sources
    aggregate = statements[0]
    assert "GROUP BY" in aggregate and "postbacks_delivery" in aggregate
    assert '"postbacks_delivery"."updated_at" >=' in aggregate


def test_figures_are_cached_a_minute(sources):
    mgid, _, _ = sources
    before = dashboard.figures()
    finished(mgid, "failed", 0.2, 10)
    assert dashboard.figures()["day_total"].failed == before["day_total"].failed
    dashboard.clear_cache()
    assert dashboard.figures()["day_total"].failed == before["day_total"].failed + 10


def test_admin_index_shows_the_dashboard(admin_client, sources):
    page = admin_client.get("/admin/").content.decode()
    assert "Postbacks by traffic source" in page
    assert "Outbrain" in page and "MGID" in page
    assert page.count('class="pb-bar"') == 24 + 28
    board = page.split('id="postbacks-dashboard"')[1].split('id="content-main"')[0]
    assert (
        "<svg" in board
        and "<script" not in board
        and "http" not in board.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    mgid = sources[0]
    assert f"?source={mgid.pk}&amp;status__exact=failed" in page
    assert "75.0 %" in page
    assert 'id="content-main"' in page  # the app list is still there


def test_admin_index_without_data(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "No postback finished in the last 7 days." in page


def test_banner_lists_auto_disabled_rules(admin_client):
    broken = factories.rule(
        "https://ts.example/?c={externalid}", name="Broken Taboola", is_active=False,
        needs_attention=True, disabled_reason="410 Gone from ts.example",
        disabled_at=timezone.now(),
    )  # fmt: skip
    factories.rule("https://ts.example/?c={externalid}", name="Healthy")
    factories.rule(
        "https://ts.example/?c={externalid}", name="Acknowledged", is_active=False,
        needs_attention=False, disabled_reason="5 failures in a row",
    )  # fmt: skip
    page = admin_client.get("/admin/").content.decode()
    assert "1 postback rule deactivated automatically" in page
    assert f"/admin/postbacks/postbackrule/{broken.pk}/change/" in page
    assert "410 Gone from ts.example" in page
    assert "Acknowledged" not in page.split("pb-banner")[1].split("</div>")[0]


def test_staff_without_permissions_see_no_figures(client, sources):
    user = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_trafficsource"))
    client.force_login(user)
    page = client.get("/admin/").content.decode()
    assert "Postbacks by traffic source" not in page
    assert "Outbrain" not in page
