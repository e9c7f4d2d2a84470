"""/health, /ready, /metrics, the status collector, the periodic tasks' last runs, the admin
status page and worker_health's database check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from unittest import mock

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from postbacks import metrics as postbacks_metrics
from postbacks.claims import Claimed
from postbacks.metrics import StatusCollector
from postbacks.transports import Outcome, Result
from tests import factories
from tracker import health
from tracker.metrics import exposition
from tracker.models import InboundRequest, TaskRun

TOKEN = "scrape-token-1"


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(client) -> dict[str, dict[tuple, float]]:
    """``/metrics`` parsed: ``{sample name: {sorted label items: value}}``."""
    with override_settings(METRICS_TOKEN=TOKEN):
        answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def delivery(**fields):
    """A delivery of the test's one click (one traffic source for them all)."""
    click = factories.Click.objects.first() or factories.click()
    return factories.DeliveryFactory(click=click, **fields)


def value(samples, name: str, **labels) -> float | None:
    return samples.get(name, {}).get(tuple(sorted(labels.items())))


# --- /health ----------------------------------------------------------------------------------


def test_health_answers_without_database_or_broker(client):
    """No database fixture: pytest-django refuses any query, so none was made."""
    with override_settings(CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0"):
        answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer["Cache-Control"].startswith("max-age=0")


# --- /ready -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ready_when_everything_answers(client):
    """Committed rows: /ready reads on a connection of its own."""
    TaskRun.objects.create(name="postbacks.retention", finished_at=timezone.now(), state="SUCCESS")
    answer = client.get("/ready")
    body = answer.json()
    assert answer.status_code == 200, body
    assert body["status"] == "ok" and body["failed"] == []
    assert {"database", "migrations", "broker"} <= set(body["checks"])
    assert all(check["ok"] for check in body["checks"].values())
    assert body["beat_last_run"] is not None
    assert not InboundRequest.objects.exists()


@pytest.mark.django_db
def test_ready_503_quickly_when_the_database_is_unreachable(client):
    with mock.patch.dict(connection.settings_dict, {"PORT": str(closed_port())}):
        started = time.monotonic()
        answer = client.get("/ready")
        elapsed = time.monotonic() - started
    body = answer.json()
    assert answer.status_code == 503
    assert elapsed < settings.HEALTH_TIMEOUT_SECONDS  # refused at once, not the deadline
    assert body["status"] == "unavailable"
    assert set(body["failed"]) == {"database", "migrations"}
    assert "refused" in body["checks"]["database"]["detail"].lower()
    assert body["checks"]["broker"]["ok"]
    assert body["beat_last_run"] is None


@pytest.mark.django_db
def test_ready_503_quickly_when_redis_is_unreachable(client):
    dead = f"redis://127.0.0.1:{closed_port()}/0"
    with override_settings(CELERY_BROKER_URL=dead, POSTBACKS_WAKE_REDIS_URL=dead):
        started = time.monotonic()
        answer = client.get("/ready")
        elapsed = time.monotonic() - started
    body = answer.json()
    assert answer.status_code == 503
    assert elapsed < settings.HEALTH_TIMEOUT_SECONDS  # refused at once, not the deadline
    assert body["failed"] == ["broker"]
    assert "ConnectionError" in body["checks"]["broker"]["detail"]
    assert body["checks"]["database"]["ok"]


@pytest.mark.django_db
def test_ready_names_a_check_that_does_not_answer_in_time(client):
    """A check still waiting at the deadline fails as "no answer", the others answer."""

    def slow(url, timeout):
        time.sleep(10)
        return [health.Check("redis", True)]

    with (
        override_settings(
            POSTBACKS_WAKE_REDIS_URL="redis://127.0.0.1:6379/9", HEALTH_TIMEOUT_SECONDS=0.5
        ),
        mock.patch.object(health, "_one_redis", slow),
    ):
        started = time.monotonic()
        answer = client.get("/ready")
        elapsed = time.monotonic() - started
    body = answer.json()
    assert answer.status_code == 503
    assert elapsed < 10  # answered at the deadline, not when the slow check ends
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"]["detail"].startswith("no answer within")


@pytest.mark.django_db
def test_ready_503_when_a_migration_is_not_applied(client):
    on_disk = health.migrations_on_disk() | {("postbacks", "9999_future")}
    with mock.patch.object(health, "migrations_on_disk", return_value=on_disk):
        answer = client.get("/ready")
    body = answer.json()
    assert answer.status_code == 503
    assert body["failed"] == ["migrations"]
    assert "postbacks.9999_future" in body["checks"]["migrations"]["detail"]


# --- /metrics ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_needs_the_token_or_the_open_setting(client):
    with override_settings(METRICS_TOKEN="", METRICS_OPEN=False):
        assert client.get("/metrics").status_code == 403
    with override_settings(METRICS_TOKEN=TOKEN):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    with override_settings(METRICS_TOKEN="", METRICS_OPEN=True):
        assert client.get("/metrics").status_code == 200
    assert not InboundRequest.objects.exists()


@pytest.mark.django_db
def test_metrics_report_backlog_sending_workers_rules_and_task_runs(client):
    now = timezone.now()
    delivery(due_at=now - timedelta(seconds=90))
    delivery(due_at=now - timedelta(seconds=5))
    delivery(due_at=now + timedelta(hours=1))  # scheduled, not due
    delivery(status="sending", due_at=now)
    delivery(status="delivered", due_at=now - timedelta(hours=2))
    factories.WorkerFactory()
    factories.WorkerFactory(heartbeat_at=now - timedelta(minutes=5))
    factories.PostbackRuleFactory(consecutive_failures=3)
    factories.PostbackRuleFactory(is_active=False, needs_attention=True)
    TaskRun.objects.create(name="postbacks.retention", finished_at=now, state="SUCCESS")

    samples = scrape(client)

    assert value(samples, "postbacks_status_up") == 1
    assert value(samples, "postbacks_due_backlog") == 2
    assert value(samples, "postbacks_scheduled") == 3
    assert 90 <= value(samples, "postbacks_oldest_due_age_seconds") < 100
    assert value(samples, "postbacks_sending") == 1
    assert value(samples, "postbacks_workers_live") == 1
    assert value(samples, "postbacks_worker_heartbeat_age_seconds") < 5
    assert value(samples, "postbacks_rules_failing") == 1
    assert value(samples, "postbacks_rules_needing_attention") == 1
    stamp = value(
        samples,
        "tracker_task_last_run_timestamp_seconds",
        task="postbacks.retention",
        state="SUCCESS",
    )
    assert stamp == pytest.approx(now.timestamp(), abs=1)


@pytest.mark.django_db
def test_collector_reports_down_when_the_database_fails():
    with mock.patch("postbacks.status.backlog", side_effect=health.DatabaseError("gone")):
        families = list(StatusCollector().collect())
    assert [(family.name, family.samples[0].value) for family in families] == [
        ("postbacks_status_up", 0)
    ]


@pytest.mark.django_db
def test_oldest_due_age_is_zero_without_due_deliveries(client):
    delivery(due_at=timezone.now() + timedelta(minutes=5))
    samples = scrape(client)
    assert value(samples, "postbacks_due_backlog") == 0
    assert value(samples, "postbacks_oldest_due_age_seconds") == 0
    assert value(samples, "postbacks_workers_live") == 0
    assert "postbacks_worker_heartbeat_age_seconds" not in samples


def claimed(**fields) -> Claimed:
    values = {"created_at": timezone.now() - timedelta(seconds=3), "event_type": "conversion"}
    item = Claimed(1, None, "h:1", "s2s", "GET", "", "", {}, 1, 3, 1, 1, **{**values, **fields})
    item.traffic_source = "Outbrain"
    return item


def test_a_recorded_attempt_counts_outcome_duration_and_lag():
    """Counters live in this process (no PROMETHEUS_MULTIPROC_DIR in the tests)."""
    labels = {"outcome": "delivered", "kind": "s2s", "traffic_source": "Outbrain"}

    def sample(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("postbacks_deliveries_total", **labels),
        sample("postbacks_attempt_duration_seconds_count", kind="s2s"),
        sample("postbacks_delivery_lag_seconds_count", event_type="conversion"),
        sample("postbacks_delivery_lag_seconds_sum", event_type="conversion"),
        sample("postbacks_deliveries_total", **{**labels, "outcome": "retry"}),
    )
    started = timezone.now()
    result = Result(Outcome.DELIVERED, status_code=200, duration_ms=250)
    postbacks_metrics.attempt_recorded(claimed(), "delivered", result, started)
    retry = Result(Outcome.RETRY, status_code=500, duration_ms=40)
    postbacks_metrics.attempt_recorded(claimed(), "scheduled", retry, started)

    after = (
        sample("postbacks_deliveries_total", **labels),
        sample("postbacks_attempt_duration_seconds_count", kind="s2s"),
        sample("postbacks_delivery_lag_seconds_count", event_type="conversion"),
        sample("postbacks_delivery_lag_seconds_sum", event_type="conversion"),
        sample("postbacks_deliveries_total", **{**labels, "outcome": "retry"}),
    )
    assert after[0] - before[0] == 1
    assert after[1] - before[1] == 2
    assert after[2] - before[2] == 1  # only the delivered one has a lag
    assert 3.2 <= after[3] - before[3] < 4.5
    assert after[4] - before[4] == 1


def test_a_lag_from_sqlite_text_is_read_as_utc():
    created = (timezone.now() - timedelta(seconds=2)).replace(tzinfo=None)
    text = created.strftime("%Y-%m-%d %H:%M:%S.%f")
    before = REGISTRY.get_sample_value(
        "postbacks_delivery_lag_seconds_sum", {"event_type": "click"}
    )
    result = Result(Outcome.DELIVERED, status_code=200, duration_ms=0)
    postbacks_metrics.attempt_recorded(
        claimed(created_at=text, event_type="click"), "delivered", result, timezone.now()
    )
    after = REGISTRY.get_sample_value("postbacks_delivery_lag_seconds_sum", {"event_type": "click"})
    assert 1.5 < after - (before or 0) < 3


def test_exposition_sums_the_counters_of_every_process_of_the_directory(tmp_path):
    """Two processes count into one multiprocess directory; /metrics' exposition sums."""
    script = "from prometheus_client import Counter; Counter('demo_things', 'x').inc(2)"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
    families = {
        family.name: family
        for family in text_string_to_metric_families(exposition([], path=str(tmp_path)).decode())
    }
    assert [sample.value for sample in families["demo_things"].samples] == [4.0]


# --- periodic tasks' last runs ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_scheduled_task_records_its_last_run_and_others_do_not():
    task = mock.Mock()
    task.name = "postbacks.retention"
    health.task_run_record(sender=task, task=task, state="SUCCESS", retval={"attempts": 3})
    other = mock.Mock()
    other.name = "postbacks.dispatch"
    health.task_run_record(sender=other, task=other, state="SUCCESS", retval={})
    run = TaskRun.objects.get()
    assert (run.name, run.state, run.detail) == (
        "postbacks.retention",
        "SUCCESS",
        "{'attempts': 3}",
    )
    health.task_run_record(sender=task, task=task, state="FAILURE", retval=None)
    assert TaskRun.objects.get().state == "FAILURE"


# --- the admin status page --------------------------------------------------------------------


@pytest.mark.django_db
def test_status_page_shows_the_figures_and_is_linked_from_the_index(admin_client):
    now = timezone.now()
    delivery(due_at=now - timedelta(seconds=120))
    delivery(status="sending", due_at=now)
    worker = factories.WorkerFactory()
    rule = factories.PostbackRuleFactory(name="Broken rule", consecutive_failures=4)
    TaskRun.objects.create(name="postbacks.retention", finished_at=now, state="SUCCESS")

    assert "/admin/status/" in admin_client.get("/admin/").content.decode()
    page = admin_client.get("/admin/status/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<td class="num" id="pb-due">1</td>' in html
    assert '<td class="num" id="pb-sending">1</td>' in html
    assert "s ago" in html
    assert worker.name in html
    assert rule.name in html
    assert "postbacks.retention (retention)" in html
    assert "Workers: 1 live" in html


@pytest.mark.django_db
def test_status_page_needs_the_view_permission(client):
    staff = factories.UserFactory(is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/status/").status_code == 403
    client.logout()
    assert client.get("/admin/status/").status_code == 302  # to the login page


# --- worker_health ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_worker_health_fails_while_the_database_is_unreachable():
    with (
        mock.patch.dict(connection.settings_dict, {"PORT": str(closed_port())}),
        pytest.raises(CommandError, match="database unreachable"),
    ):
        call_command("worker_health", "--timeout", "1")


@pytest.mark.django_db
def test_clicks_and_inbound_requests_are_counted(client):
    """In memory, where they are recorded (no query of their own)."""
    campaign = factories.campaign()

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    inbound = {"endpoint": "s2s", "outcome": "accepted"}
    unknown = {"endpoint": "s2s", "outcome": "unknown_click"}
    before = (
        sample("tracker_clicks_total"),
        sample("tracker_inbound_requests_total", inbound),
        sample("tracker_inbound_requests_total", unknown),
    )
    answer = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    click_id = answer.headers["Location"].split("s2=")[-1]
    assert client.get("/cv", {"click_id": click_id, "txid": "T1"}).status_code == 200
    unknown_click = {"click_id": "00000000-0000-0000-0000-000000000000"}
    assert client.get("/cv", unknown_click).status_code == 404
    after = (
        sample("tracker_clicks_total"),
        sample("tracker_inbound_requests_total", inbound),
        sample("tracker_inbound_requests_total", unknown),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
