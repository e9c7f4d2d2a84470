"""Delivery engine v2 against a real worker: deadlines, stable IDs, masking, fast recovery."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from postbacks.models import Attempt, Delivery, Worker
from postbacks.receiver import Reply
from tests.conftest import convert, setup_campaign, wait_until
from tests.conftest import settled as finished

pytestmark = pytest.mark.integration


def test_trickling_receiver_is_cut_at_the_deadline_without_a_false_worker_lost(
    worker, receiver, client
):
    """A receiver sending 1 byte every 0.5 s is cut at the 2 s timeout; the retry delivers."""
    campaign, _ = setup_campaign(receiver, timeout_seconds=2, retry_base_seconds=1)
    receiver.script(Reply(200, body="x" * 60, trickle=0.5))
    convert(client, campaign, txid="T-trickle")

    assert wait_until(finished(), timeout=30)
    attempts = list(Attempt.objects.order_by("number"))
    assert [(a.number, a.outcome) for a in attempts] == [(1, "retry"), (2, "delivered")]
    assert attempts[0].error.startswith("Timeout: no complete answer within 2 s")
    assert attempts[0].duration_ms < 4000
    assert not any("Worker lost" in a.error for a in attempts)


def test_every_attempt_carries_the_same_delivery_id(worker, receiver, client):
    campaign, rule = setup_campaign(receiver, retry_base_seconds=1)
    rule.url_template = receiver.url + "/pb?d={delivery.id}"
    rule.save()
    receiver.script(Reply(503), Reply(200))
    convert(client, campaign, txid="T-id")

    first, second = receiver.wait_for(2)
    delivery = Delivery.objects.get()
    assert first.query["d"] == second.query["d"] == str(delivery.public_id)
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.headers["Idempotency-Key"] == str(delivery.public_id)


def test_secrets_are_masked_in_the_log_the_delivery_and_its_admin_page(
    worker, receiver, client, settings
):
    campaign, rule = setup_campaign(receiver, max_attempts=1)
    rule.url_template = "http://127.0.0.1:1/bot123456:AAHsecretBOT/send?api_key=KEY-SECRET&c=1"
    rule.save()
    convert(client, campaign, txid="T-mask")

    assert wait_until(finished(), timeout=30)
    attempt = Attempt.objects.get()
    delivery = attempt.delivery
    assert attempt.url == "http://127.0.0.1:1/bot***/send?api_key=***&c=1"
    for text in (attempt.url, attempt.error, delivery.last_error):
        assert "secret" not in text.lower()
    assert "KEY-SECRET" not in (worker.log_path.read_text())
    assert "AAHsecretBOT" not in (worker.log_path.read_text())

    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_delivery"))
    client.force_login(viewer)
    page = client.get(f"/admin/postbacks/delivery/{delivery.pk}/change/")
    assert page.status_code == 200
    assert b"api_key=***" in page.content
    assert b"KEY-SECRET" not in page.content and b"AAHsecretBOT" not in page.content


def test_killed_worker_recovers_in_under_15_seconds(worker, receiver, client):
    """The attempt in flight is taken back once the worker's heartbeat stops, not its lease."""
    campaign, _ = setup_campaign(receiver, timeout_seconds=30)
    receiver.script(Reply(200, delay=40))  # the first request hangs while we kill the worker
    convert(client, campaign, txid="T-kill")
    assert len(receiver.wait_for(1)) == 1
    worker.kill()
    killed_at = time.monotonic()
    worker.start()

    assert len(receiver.wait_for(2, timeout=30)) == 2
    assert time.monotonic() - killed_at < 15
    assert wait_until(finished(), timeout=10)
    attempts = list(Attempt.objects.order_by("number"))
    assert [a.outcome for a in attempts] == ["retry", "delivered"]
    assert "Worker lost" in attempts[0].error


def test_heartbeats_keep_beating_across_later_tasks(worker, receiver, client):
    """Every worker process that dispatched keeps beating while it runs sweeps and wake-ups.

    Celery's Django fixup closes a prefork child's connection pool around every task; with
    a pool, the heartbeat thread lost its connection after the next task and the sweeper
    took back postbacks of live workers.
    """
    campaign, _ = setup_campaign(receiver)
    for n in range(30):  # a wake-up every 0.2 s, and the sweeper every second, for 6 s
        convert(client, campaign, txid=f"T-beat-{n}")
        time.sleep(0.2)
    assert wait_until(finished(), timeout=30)

    horizon = timezone.now() - timedelta(seconds=2.5)
    beats = list(Worker.objects.values_list("name", "heartbeat_at"))
    assert beats and all(at >= horizon for _name, at in beats), beats
    assert "Heartbeat not written" not in worker.log_path.read_text()
    assert not any("Worker lost" in a.error for a in Attempt.objects.all())
