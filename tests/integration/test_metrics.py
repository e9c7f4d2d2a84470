"""/metrics against a real Celery worker writing its counters in multiprocess mode, and a
real HTTP receiver: the backlog and the lag series move as deliveries are added and sent."""

from __future__ import annotations

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import convert, settled, setup_campaign, wait_until

pytestmark = pytest.mark.integration

TOKEN = "integration-scrape"


def scrape(client) -> dict[tuple[str, tuple], float]:
    """``/metrics`` over the URLconf, parsed: ``{(sample, sorted labels): value}``."""
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert answer.status_code == 200, answer.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.content.decode())
        for sample in family.samples
    }


def test_backlog_and_lag_move_as_deliveries_are_added_and_sent(worker, receiver, client):
    campaign, _rule = setup_campaign(receiver)
    delivered = (
        "postbacks_deliveries_total",
        (("kind", "s2s"), ("outcome", "delivered"), ("traffic_source", "Taboola")),
    )
    lag_count = ("postbacks_delivery_lag_seconds_count", (("event_type", "conversion"),))
    duration_count = ("postbacks_attempt_duration_seconds_count", (("kind", "s2s"),))
    backlog = ("postbacks_due_backlog", ())
    oldest = ("postbacks_oldest_due_age_seconds", ())

    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(worker.metrics_dir), METRICS_TOKEN=TOKEN):
        # The worker's heartbeat row comes back within a beat of its resuming.
        live = ("postbacks_workers_live", ())
        assert wait_until(lambda: scrape(client)[live] >= 1, timeout=15)
        before = scrape(client)
        assert before[backlog] == 0

        worker.pause()  # the deliveries wait: the backlog grows
        for n in range(3):
            convert(client, campaign, f"ext-{n}", txid=f"T-{n}", payout="1.5")
        waiting = scrape(client)
        assert waiting[backlog] == 3
        assert waiting[oldest] > 0
        assert waiting.get(lag_count, 0) == before.get(lag_count, 0)

        worker.resume()
        assert len(receiver.wait_for(3)) == 3
        assert wait_until(settled(status__isnull=False))

        def sent():
            now = scrape(client)
            return now if now.get(lag_count, 0) - before.get(lag_count, 0) == 3 else None

        after = wait_until(sent, timeout=15)
        assert after, scrape(client)
        assert after[backlog] == 0
        assert after[oldest] == 0
        assert after[delivered] - before.get(delivered, 0) == 3
        assert after[duration_count] - before.get(duration_count, 0) == 3
        claimed = ("postbacks_claimed_total", ())
        assert after[claimed] - before.get(claimed, 0) >= 3
        # The worker's processes and the web's exposition agree on one set of series.
        assert after[("postbacks_status_up", ())] == 1
