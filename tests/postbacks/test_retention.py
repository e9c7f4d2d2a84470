"""Retention: the log older than POSTBACKS_RETENTION_DAYS goes, in batches; the rest stays."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from postbacks import tasks
from postbacks.models import Attempt, Delivery
from tests import factories

pytestmark = pytest.mark.django_db

URL = "https://ts.example/pb"


def delivery(status: str, age_days: float, attempts: int = 1, attempt_age: float | None = None):
    """A delivery created and last changed ``age_days`` ago, with attempts that old (or
    ``attempt_age`` days old)."""
    created = factories.delivery(URL, status=status, attempt_count=attempts)
    moment = timezone.now() - timedelta(days=age_days)
    Delivery.objects.filter(pk=created.pk).update(created_at=moment, updated_at=moment)
    started = timezone.now() - timedelta(days=age_days if attempt_age is None else attempt_age)
    for number in range(1, attempts + 1):
        Attempt.objects.create(
            delivery=created, number=number, started_at=started, method="GET", url=URL,
            status_code=500, outcome="retry",
        )  # fmt: skip
    return created


@pytest.fixture
def log():
    return {
        "old_delivered": delivery("delivered", 40, attempts=2),
        "old_failed": delivery("failed", 31, attempts=3),
        "old_cancelled": delivery("cancelled", 33, attempts=0),
        "old_scheduled": delivery("scheduled", 40, attempts=2),
        "old_sending": delivery("sending", 40, attempts=1),
        "new_delivered": delivery("delivered", 29, attempts=1),
        "new_failed": delivery("failed", 1, attempts=2),
        # Created long ago, its last attempt recent: not finished for 30 days yet.
        "old_but_recent_attempt": delivery("failed", 40, attempts=1, attempt_age=2),
    }


def remaining(log) -> set[str]:
    ids = set(Delivery.objects.values_list("pk", flat=True))
    return {name for name, d in log.items() if d.pk in ids}


def test_deletes_only_old_finished_deliveries_and_old_attempts(log):
    Delivery.objects.filter(pk=log["old_but_recent_attempt"].pk).update(
        updated_at=timezone.now() - timedelta(days=2)
    )
    purged = tasks.retention_purge(30)
    assert remaining(log) == {
        "old_scheduled",
        "old_sending",
        "new_delivered",
        "new_failed",
        "old_but_recent_attempt",
    }
    assert (purged.deliveries, purged.finished) == (3, True)
    # Old attempts go even when their delivery stays (the scheduled and sending ones).
    assert purged.attempts == 2 + 3 + 2 + 1
    cutoff = timezone.now() - timedelta(days=30)
    assert not Attempt.objects.filter(started_at__lt=cutoff).exists()
    assert Attempt.objects.count() == 1 + 2 + 1
    assert tasks.retention_purge(30).as_dict() == {"attempts": 0, "deliveries": 0}


def test_batches_go_on_until_nothing_is_left(log):
    purged = tasks.retention_purge(30, batch_size=1)
    assert (purged.attempts, purged.deliveries) == (2 + 3 + 2 + 1 + 1, 4)
    assert remaining(log) == {"old_scheduled", "old_sending", "new_delivered", "new_failed"}


def test_zero_days_keeps_everything(log):
    assert tasks.retention_purge(0).as_dict() == {"attempts": 0, "deliveries": 0}
    assert remaining(log) == set(log)


def test_time_budget_stops_between_batches(log):
    purged = tasks.retention_purge(30, batch_size=1, max_seconds=0)
    assert not purged.finished
    assert Delivery.objects.count() == len(log)
    tasks.retention_purge(30, batch_size=1)
    assert "old_delivered" not in remaining(log)


def test_task_uses_the_setting_and_beat_runs_it(log, settings):
    assert settings.CELERY_BEAT_SCHEDULE["postbacks-retention"]["task"] == "postbacks.retention"
    settings.POSTBACKS_RETENTION_DAYS = 0
    assert tasks.retention_task.apply().get() == {"attempts": 0, "deliveries": 0}
    settings.POSTBACKS_RETENTION_DAYS = 35
    assert tasks.retention_task.apply().get()["deliveries"] == 2  # delivered 40, failed 40
    assert remaining(log) == set(log) - {"old_delivered", "old_but_recent_attempt"}


def test_default_is_thirty_days():
    assert settings.POSTBACKS_RETENTION_DAYS == 30


def test_management_command_dry_run_and_run(log):
    out = StringIO()
    call_command("postbacks_retention", "--dry-run", stdout=out)
    assert "Would delete 8 attempts and 4 finished deliveries older than 30 days" in (
        out.getvalue()
    )
    assert Delivery.objects.count() == len(log)
    out = StringIO()
    call_command("postbacks_retention", "--days", "35", "--batch-size", "2", stdout=out)
    assert "Deleted 6 attempts and 2 finished deliveries older than 35 days." in out.getvalue()
    call_command("postbacks_retention", "--days", "0", stdout=(out := StringIO()))
    assert "nothing deleted" in out.getvalue()
