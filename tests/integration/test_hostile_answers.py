"""Receivers whose answers hold NUL bytes or binary data, through a real worker.

PostgreSQL text columns refuse NUL: before the answers were made storable, one GIF pixel in a
batch of results rolled back the whole batch, and every delivery in it was sent again.
"""

from __future__ import annotations

import gzip
from decimal import Decimal

import pytest

from postbacks.models import Attempt, Delivery
from postbacks.receiver import Receiver, Reply
from tests import factories
from tests.conftest import convert, wait_until
from tests.conftest import settled as finished

pytestmark = pytest.mark.integration

# The 1x1 transparent GIF traffic sources answer postbacks with (43 bytes, NULs inside).
GIF = bytes.fromhex(
    "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b"
)


@pytest.fixture
def second_receiver():
    server = Receiver().start()
    yield server
    server.stop()


def _campaign_with_rules(*receivers: Receiver, **rule_fields):
    source = factories.traffic_source()
    offer = factories.offer(url="https://offer.example/?s2={cf_click_id}", payout=Decimal("1"))
    campaign = factories.campaign(source, offer)
    rules = [
        factories.rule(
            f"{r.url}/pb?d={{delivery.id}}", sources=[source], name=f"R{i}", **rule_fields
        )
        for i, r in enumerate(receivers)
    ]
    return campaign, rules


def _convert(client, campaign, count: int) -> None:
    for i in range(count):
        convert(client, campaign, f"ext-{i}", txid=f"T-{i}")


def _per_delivery(receiver: Receiver) -> dict[str, int]:
    seen: dict[str, int] = {}
    for request in receiver.received:
        seen[request.query["d"]] = seen.get(request.query["d"], 0) + 1
    return seen


def test_a_gif_answer_is_recorded_and_no_delivery_is_sent_twice(
    worker, receiver, second_receiver, client
):
    """20 conversions, one rule to a GIF receiver and one to a healthy one: all 40
    deliveries delivered on their first attempt, each request received once."""
    receiver.default = Reply(200, body=GIF, content_type="image/gif")
    second_receiver.default = Reply(200, body="OK")
    campaign, _rules = _campaign_with_rules(receiver, second_receiver)

    _convert(client, campaign, 20)

    assert wait_until(finished(), timeout=60)
    deliveries = Delivery.objects.all()
    assert deliveries.count() == 40
    assert set(deliveries.values_list("status", "attempt_count")) == {("delivered", 1)}
    assert Attempt.objects.count() == 40
    assert not Attempt.objects.filter(error__contains="Worker lost").exists()
    for server in (receiver, second_receiver):
        per_delivery = _per_delivery(server)
        assert len(per_delivery) == 20 and set(per_delivery.values()) == {1}
    gif_attempt = Attempt.objects.filter(delivery__rule__name="R0").first()
    assert gif_attempt.response_body.startswith(
        "[binary answer: image/gif, 43 bytes: 47 49 46 38 39 61"
    )
    assert set(
        Attempt.objects.filter(delivery__rule__name="R1").values_list("response_body", flat=True)
    ) == {"OK"}


def test_nul_bytes_in_a_500_and_a_gzip_answer_are_stored_escaped(worker, receiver, client):
    """A 500 whose body has NULs is retried, then a gzip stream that decodes to zeros is
    delivered: each attempt logged once, the answers described, not lost."""
    campaign, _rules = _campaign_with_rules(receiver, retry_base_seconds=1, max_attempts=3)
    zeros = gzip.compress(b"\x00" * 5000)
    receiver.script(
        Reply(500, body=b"crash\x00dump\x00"),
        Reply(200, body=zeros, headers={"Content-Encoding": "gzip"}),
    )
    _convert(client, campaign, 1)

    assert wait_until(finished(), timeout=60)
    first, second = Attempt.objects.order_by("number")
    assert (first.outcome, first.status_code) == ("retry", 500)
    assert first.response_body.startswith("[binary answer: text/plain, 11 bytes: 63 72 61 73 68")
    assert (second.outcome, second.status_code) == ("delivered", 200)
    assert second.response_body.startswith("[binary answer: text/plain, more than 2048 bytes")
    assert len(receiver.received) == 2


def test_a_nul_in_a_redirect_location_is_logged_without_it(worker, receiver, client):
    """A 302 whose Location holds a NUL: the dispatcher's client refuses the malformed answer
    (a retryable protocol error; here the rule allows one attempt), and the attempt is
    recorded; the requests client's escaping of it is in tests/postbacks/test_http.py."""
    campaign, _rules = _campaign_with_rules(receiver, max_attempts=1)
    receiver.script(Reply(302, body="", headers={"Location": "http://evil.example/\x00x"}))
    _convert(client, campaign, 1)

    assert wait_until(finished(), timeout=60)
    attempt = Attempt.objects.get()
    assert attempt.outcome == "failed" and attempt.delivery.status == "failed"
    assert "\x00" not in attempt.error
    assert attempt.error == attempt.delivery.last_error
    assert len(receiver.received) == 1
