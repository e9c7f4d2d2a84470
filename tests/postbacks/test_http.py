"""The HTTP transport against a real local receiver: pooling, body cap, SSRF guard."""

from django.test import override_settings

from postbacks.receiver import Reply
from postbacks.transports import PreparedRequest, S2SPostback


def send(url: str, timeout: float = 5):
    return S2SPostback().send(PreparedRequest("GET", url), timeout=timeout)


def test_delivered_with_status_body_and_duration(receiver):
    receiver.script(Reply(201, body="accepted"))
    result = send(receiver.url + "/pb?c=1")
    assert (result.outcome, result.status_code, result.response_body) == (
        "delivered", 201, "accepted",
    )  # fmt: skip
    assert receiver.received[0].path == "/pb?c=1"
    assert receiver.received[0].headers["User-Agent"].startswith("postback-manager/")


@override_settings(POSTBACKS_RESPONSE_BODY_MAX_BYTES=10)
def test_response_body_is_capped(receiver):
    receiver.script(Reply(200, body="x" * 5000))
    assert send(receiver.url).response_body == "x" * 10


def test_timeout_is_retryable(receiver):
    receiver.script(Reply(200, delay=2))
    result = send(receiver.url, timeout=0.5)
    assert result.outcome == "retry"
    assert result.error.startswith("Timeout")


def test_connection_refused_is_retryable(receiver):
    url = receiver.url
    receiver.stop()
    result = send(url)
    assert (result.outcome, result.status_code) == ("retry", None)
    assert "ConnectionError" in result.error


def test_redirects_are_not_followed(receiver):
    receiver.script(Reply(302, headers={"Location": receiver.url + "/elsewhere"}))
    result = send(receiver.url)
    assert result.outcome == "failed"
    assert len(receiver.received) == 1


@override_settings(POSTBACKS_ALLOW_PRIVATE_NETWORKS=False)
def test_private_destinations_are_refused_unless_allowed(receiver):
    result = send(receiver.url)
    assert result.outcome == "failed"
    assert "private network" in result.error
    assert receiver.received == []
