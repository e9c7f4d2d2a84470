"""The HTTP transport against a real local receiver: pooling, body cap, SSRF guard, deadline."""

import socket
import threading
import time

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


def test_trickling_body_is_cut_at_the_deadline(receiver):
    """One byte every 0.2 s for 100 bytes would take 20 s; the attempt ends at its 1 s."""
    receiver.script(Reply(200, body="x" * 100, trickle=0.2))
    started = time.monotonic()
    result = send(receiver.url, timeout=1)
    assert time.monotonic() - started < 3
    assert result.outcome == "retry"
    assert result.error.startswith("Timeout: no complete answer within 1 s")


def test_trickling_headers_are_cut_at_the_deadline():
    """A server that sends its status line, then one header byte every 0.2 s."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not stop.is_set():
                    try:
                        conn.sendall(b"a")
                    except OSError:
                        return
                    time.sleep(0.2)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started = time.monotonic()
        result = send(f"http://127.0.0.1:{port}/pb", timeout=1)
        elapsed = time.monotonic() - started
        stop.set()
    assert elapsed < 3
    assert result.outcome == "retry"
    assert result.error.startswith("Timeout")


def test_body_cut_half_way_is_a_retry_not_an_exception(receiver):
    receiver.script(Reply(200, body="y" * 5000, truncate=True))
    result = send(receiver.url)
    assert result.outcome == "retry"
    assert "ProtocolError" in result.error or "ChunkedEncodingError" in result.error


def test_bogus_charset_is_read_as_utf8(receiver):
    receiver.script(Reply(200, body="ok ✓", content_type="text/plain; charset=bogus"))
    result = send(receiver.url)
    assert (result.outcome, result.response_body) == ("delivered", "ok ✓")


def test_send_never_raises_on_unexpected_errors(receiver, monkeypatch):
    def explode(*args, **kwargs):
        raise LookupError("unknown encoding: bogus")

    monkeypatch.setattr("postbacks.transports.HttpTransport._read_body", explode)
    result = send(receiver.url)
    assert result.outcome == "retry"
    assert result.error == "Unexpected error: LookupError: unknown encoding: bogus"


def test_keep_alive_connection_is_reused_after_a_full_read(receiver):
    send(receiver.url + "/a")
    send(receiver.url + "/b")
    first, second = receiver.received
    assert first.client_port == second.client_port  # one keep-alive connection
