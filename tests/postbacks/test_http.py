"""The HTTP transport against a real local receiver: pooling, body cap, SSRF guard, deadline.

Each test runs twice: through ``requests`` (the test button, one-off sends, an egress proxy)
and through the dispatcher's event loop (``postbacks.http_async``, aiohttp): both clients
keep the same guarantees and give the same answers.
"""

import socket
import threading
import time

import pytest
from django.test import override_settings

from postbacks import http_async
from postbacks.receiver import Reply
from postbacks.transports import PreparedRequest, S2SPostback


@pytest.fixture(params=["requests", "aiohttp"])
def client_kind(request):
    return request.param


@pytest.fixture
def send(client_kind):
    """``send(url, timeout=5)``: one GET through the client of ``client_kind``. The event
    loop's client is made on the first send, inside the test's settings."""
    made: list[http_async.Client] = []

    def go(url: str, timeout: float = 5):
        request = PreparedRequest("GET", url)
        if client_kind == "requests":
            return S2SPostback().send(request, timeout=timeout)
        if not made:
            made.append(http_async.Client(10, 10))
        coroutine = S2SPostback().send_async(made[0], request, timeout)
        return made[0].submit(coroutine).result(30)

    yield go
    for client in made:
        client.close()


def test_delivered_with_status_body_and_duration(receiver, send):
    receiver.script(Reply(201, body="accepted"))
    result = send(receiver.url + "/pb?c=1")
    assert (result.outcome, result.status_code, result.response_body) == (
        "delivered", 201, "accepted",
    )  # fmt: skip
    assert receiver.received[0].path == "/pb?c=1"
    assert receiver.received[0].headers["User-Agent"].startswith("postback-manager/")


@override_settings(POSTBACKS_RESPONSE_BODY_MAX_BYTES=10)
def test_response_body_is_capped(receiver, send):
    receiver.script(Reply(200, body="x" * 5000))
    assert send(receiver.url).response_body == "x" * 10


def test_timeout_is_retryable(receiver, send):
    receiver.script(Reply(200, delay=2))
    result = send(receiver.url, timeout=0.5)
    assert result.outcome == "retry"
    assert result.error.startswith("Timeout")


def test_connection_refused_is_retryable(receiver, send):
    url = receiver.url
    receiver.stop()
    result = send(url)
    assert (result.outcome, result.status_code) == ("retry", None)
    assert "ConnectionError" in result.error or "ClientConnectorError" in result.error


def test_redirects_are_not_followed(receiver, send):
    receiver.script(Reply(302, headers={"Location": receiver.url + "/elsewhere"}))
    result = send(receiver.url)
    assert result.outcome == "failed"
    assert len(receiver.received) == 1


def test_a_nul_byte_in_an_answer_never_reaches_the_result(receiver, send, client_kind):
    """A Location header with a NUL: requests reads it (escaped in the error), aiohttp
    refuses the malformed answer (a retryable protocol error); a body with a NUL is binary."""
    receiver.script(Reply(302, body="", headers={"Location": "http://evil.example/\x00x"}))
    result = send(receiver.url)
    assert "\x00" not in result.error
    if client_kind == "requests":
        assert result.outcome == "failed"
        assert result.error == "HTTP 302: redirect to http://evil.example/\\x00x not followed"
    else:
        assert result.outcome == "retry"
    receiver.script(Reply(500, body="a\x00b"))
    result = send(receiver.url)
    assert (result.outcome, result.response_body) == (
        "retry", "[binary answer: text/plain, 3 bytes: 61 00 62]",
    )  # fmt: skip


@override_settings(POSTBACKS_ALLOW_PRIVATE_NETWORKS=False)
def test_private_destinations_are_refused_unless_allowed(receiver, send):
    result = send(receiver.url)
    assert result.outcome == "failed"
    assert "private network" in result.error
    assert receiver.received == []


@override_settings(POSTBACKS_ALLOW_PRIVATE_NETWORKS=False)
def test_a_name_resolving_to_a_private_address_is_refused(receiver, send):
    port = receiver.url.rsplit(":", 1)[1]
    result = send(f"http://localhost:{port}/pb")
    assert result.outcome == "failed"
    assert "private network" in result.error
    assert receiver.received == []


def test_trickling_body_is_cut_at_the_deadline(receiver, send):
    """One byte every 0.2 s for 100 bytes would take 20 s; the attempt ends at its 1 s."""
    receiver.script(Reply(200, body="x" * 100, trickle=0.2))
    started = time.monotonic()
    result = send(receiver.url, timeout=1)
    assert time.monotonic() - started < 3
    assert result.outcome == "retry"
    assert result.error.startswith("Timeout: no complete answer within 1 s")


def test_trickling_headers_are_cut_at_the_deadline(send):
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


def test_body_cut_half_way_is_a_retry_not_an_exception(receiver, send):
    receiver.script(Reply(200, body="y" * 1000, truncate=True))  # cut before the body cap
    result = send(receiver.url)
    assert result.outcome == "retry"
    assert any(
        name in result.error
        for name in ("ProtocolError", "ChunkedEncodingError", "ClientPayloadError")
    ), result.error


def test_bogus_charset_is_read_as_utf8(receiver, send):
    receiver.script(Reply(200, body="ok ✓", content_type="text/plain; charset=bogus"))
    result = send(receiver.url)
    assert (result.outcome, result.response_body) == ("delivered", "ok ✓")


def test_send_never_raises_on_unexpected_errors(receiver, monkeypatch, send, client_kind):
    def explode(*args, **kwargs):
        raise LookupError("unknown encoding: bogus")

    async def explode_async(*args, **kwargs):
        explode()

    if client_kind == "requests":
        monkeypatch.setattr("postbacks.transports.HttpTransport._read_body", explode)
    else:
        monkeypatch.setattr("postbacks.http_async.Client.fetch", explode_async)
    result = send(receiver.url)
    assert result.outcome == "retry"
    assert result.error == "Unexpected error: LookupError: unknown encoding: bogus"


def test_keep_alive_connection_is_reused_after_a_full_read(receiver, send):
    send(receiver.url + "/a")
    send(receiver.url + "/b")
    first, second = receiver.received
    assert first.client_port == second.client_port  # one keep-alive connection
