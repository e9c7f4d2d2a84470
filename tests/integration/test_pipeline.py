"""End to end on PostgreSQL, Redis, a Celery worker process and local HTTP receivers."""

from __future__ import annotations

import time

import pytest
import requests

from postbacks.models import Attempt, Delivery
from postbacks.receiver import Reply
from tests.conftest import click_id_from, setup_campaign, wait_until, worker_swept
from tests.conftest import settled as finished

pytestmark = pytest.mark.integration


def test_clickflare_scenario_over_http(worker, receiver, live_server):
    """Taboola link -> offer with {cf_click_id} -> network S2S postback -> Taboola postback."""
    campaign, _rule = setup_campaign(receiver)
    external_id = "tbl-" + "x" * 66
    click = requests.get(
        f"{live_server.url}/c/{campaign.key}",
        params={"external_id": external_id, "site": "news.example"},
        allow_redirects=False,
        timeout=10,
    )
    assert click.status_code == 302
    assert click.headers["Location"].startswith("https://offer.example/?s2=")
    click_id = click_id_from(click)

    answer = requests.get(
        f"{live_server.url}/cv",
        params={"click_id": click_id, "payout": "2.35", "txid": "T-1"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"

    received = receiver.wait_for(1)
    assert [r.path for r in received] == [
        f"/actions-handler/log/3/s2s-action?click-id={external_id}"
        "&name=lead&revenue=2.35&currency=USD"
    ]
    assert wait_until(finished())
    attempt = Attempt.objects.get()
    assert (attempt.outcome, attempt.status_code, attempt.number) == ("delivered", 200, 1)
    assert attempt.url == receiver.url + received[0].path
    assert attempt.delivery.status == "delivered"


def test_500_then_200_is_retried_and_both_attempts_logged(worker, receiver, client):
    campaign, _ = setup_campaign(receiver, retry_base_seconds=1)
    receiver.script(Reply(500, body="upstream down"), Reply(200))
    click = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    client.get("/cv", {"click_id": click_id_from(click), "payout": "3", "txid": "T-2"})

    assert len(receiver.wait_for(2)) == 2
    assert wait_until(finished())
    attempts = list(Attempt.objects.order_by("number"))
    assert [(a.number, a.status_code, a.outcome) for a in attempts] == [
        (1, 500, "retry"),
        (2, 200, "delivered"),
    ]
    assert attempts[0].response_body == "upstream down"
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempt_count) == ("delivered", 2)


def test_permanent_4xx_is_not_retried(worker, receiver, client):
    campaign, _ = setup_campaign(receiver, retry_base_seconds=1)
    receiver.default = Reply(404, body="no such click")
    click = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    client.get("/cv", {"click_id": click_id_from(click), "txid": "T-3"})

    assert wait_until(finished())
    assert worker_swept()  # a retry, were one scheduled, would have been claimed by now
    assert len(receiver.received) == 1
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.last_status_code) == ("failed", 404)


def test_attempts_exhausted_marks_failed(worker, receiver, client):
    campaign, _ = setup_campaign(receiver, retry_base_seconds=1, max_attempts=2)
    receiver.default = Reply(503)
    click = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    client.get("/cv", {"click_id": click_id_from(click), "txid": "T-4"})

    assert wait_until(finished())
    assert list(Attempt.objects.order_by("number").values_list("outcome", flat=True)) == [
        "retry",
        "failed",
    ]
    delivery = Delivery.objects.get()
    assert delivery.status == "failed"
    assert "gave up after 2 attempts" in delivery.last_error


# The one real-time delay test: a Celery countdown through a worker process. Longer delays
# (held in the database, the sweeper's wake-up) and retries run against an injected clock in
# tests/postbacks/test_clock.py; the sweeper waking for a due delivery whose message never
# went out is test_broker_down_at_commit_loses_nothing below.
@pytest.mark.parametrize("delay", [1])
def test_delayed_rule_fires_no_earlier_than_its_delay(worker, receiver, client, delay):
    campaign, _ = setup_campaign(receiver, delay_seconds=delay)
    click = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    converted_at = time.time()
    client.get("/cv", {"click_id": click_id_from(click), "txid": "T-5"})

    received = receiver.wait_for(1, timeout=delay + 20)
    assert len(received) == 1
    assert received[0].at - converted_at >= delay


def test_duplicate_txid_fires_once(worker, receiver, client):
    campaign, _ = setup_campaign(receiver)
    click = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    params = {"click_id": click_id_from(click), "payout": "1.5", "txid": "T-6"}
    first = client.get("/cv", params).json()
    second = client.get("/cv", params).json()
    assert first["status"] == "ok"
    assert second == {"status": "duplicate", "conversion_id": first["conversion_id"]}

    assert len(receiver.wait_for(1)) == 1
    assert wait_until(finished())
    assert len(receiver.received) == 1
    assert Delivery.objects.count() == 1


def test_worker_killed_mid_attempt_still_delivers_after_restart(worker, receiver, client):
    campaign, _ = setup_campaign(receiver, timeout_seconds=3)
    receiver.script(Reply(200, delay=10))  # the first request hangs while we kill the worker
    click = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    client.get("/cv", {"click_id": click_id_from(click), "txid": "T-7"})

    assert len(receiver.wait_for(1)) == 1
    assert Delivery.objects.get().status == "sending"
    worker.kill()
    worker.start()

    assert len(receiver.wait_for(2, timeout=60)) == 2
    assert wait_until(finished(), timeout=30)
    attempts = list(Attempt.objects.order_by("number"))
    assert [a.outcome for a in attempts] == ["retry", "delivered"]
    assert "Worker lost" in attempts[0].error
    assert Delivery.objects.get().status == "delivered"


def test_broker_down_at_commit_loses_nothing(worker, receiver, client, monkeypatch):
    """The publish fails, the conversion is still accepted; the sweeper sends it later."""
    from kombu.exceptions import OperationalError

    from postbacks.tasks import dispatch_task

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    campaign, _ = setup_campaign(receiver)
    click = client.get(f"/c/{campaign.key}", {"external_id": "abc"})
    monkeypatch.setattr(dispatch_task, "apply_async", broker_down)
    answer = client.get("/cv", {"click_id": click_id_from(click), "txid": "T-8"})
    assert answer.status_code == 200
    assert Delivery.objects.get().status == "scheduled"

    assert len(receiver.wait_for(1, timeout=30)) == 1
    assert wait_until(finished())
    assert Delivery.objects.get().status == "delivered"
