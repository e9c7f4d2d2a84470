"""Standard Webhooks signing, end to end at the unit level: each signature is checked with
the ``standardwebhooks`` package *and* with the spec's algorithm written out here
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):
``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed with the base64-decoded
secret after ``whsec_``. Requests go to a real local receiver."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import importlib.util
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from django.utils import timezone as django_tz
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from postbacks import signing
from postbacks.models import Delivery, PostbackRule
from postbacks.receiver import Reply
from postbacks.transports import (
    CrmWebhook,
    Outcome,
    PreparedRequest,
    S2SPostback,
    Secrets,
    get_transport,
)
from tests import factories
from tracker import services

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"\xff" * 24).decode()


def spec_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The spec's symmetric signature, independent of the code under test."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def spec_verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}
    expected = spec_signature(
        secret, lowered["webhook-id"], lowered["webhook-timestamp"], body
    ).encode()
    return any(
        hmac.compare_digest(expected, s.encode()) for s in lowered["webhook-signature"].split()
    )


class FrozenClock(datetime):
    """``datetime`` whose ``now`` is :attr:`at` (set by the test)."""

    at = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    @classmethod
    def now(cls, tz=None):
        return cls.at if tz is None else cls.at.astimezone(tz)


@pytest.fixture
def clock(monkeypatch):
    FrozenClock.at = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr(signing, "datetime", FrozenClock)
    return FrozenClock


# --- the signature itself -------------------------------------------------------------


def test_sign_headers_match_the_spec_and_the_package():
    body = '{"type":"conversion.created","payout":2.5,"name":"ünï ✓"}'
    headers = signing.sign_headers("d-1", body, [SECRET])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "d-1"
    stamp = headers["webhook-timestamp"]
    assert stamp.isdigit() and abs(int(stamp) - datetime.now(UTC).timestamp()) < 5
    assert headers["webhook-signature"] == spec_signature(SECRET, "d-1", stamp, body.encode())
    assert Webhook(SECRET).verify(body.encode(), headers) == json.loads(body)


def test_a_fixed_vector():
    at = datetime(2023, 1, 19, 0, 13, 51, tzinfo=UTC)
    headers = signing.sign_headers("msg_1", '{"a":1}', [SECRET], at=at)
    assert headers["webhook-timestamp"] == "1674087231"
    assert headers["webhook-signature"] == spec_signature(SECRET, "msg_1", "1674087231", b'{"a":1}')


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 1, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2026, 1, 1, 12, 0),  # naive: taken as UTC
    ],
)
def test_any_time_zone_signs_the_second_in_the_header(at):
    headers = signing.sign_headers("d-1", "x", [SECRET], at=at)
    assert headers["webhook-timestamp"] == "1767268800"
    assert spec_verifies(SECRET, headers, b"x")


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "whsec_" + "A" * 31, "whsec_!!!notbase64", "sk_" + "A" * 44,
     "whsec_" + base64.b64encode(b"x" * 65).decode()],
)  # fmt: skip
def test_unusable_secrets_are_refused(secret):
    assert not signing.is_valid_secret(secret)
    with pytest.raises(ValueError, match="whsec_"):
        signing.sign_headers("d-1", "", [secret])


def test_secret_sizes_the_spec_allows():
    for size in (24, 32, 64):
        assert signing.is_valid_secret("whsec_" + base64.b64encode(b"k" * size).decode())
    made = {signing.new_secret() for _ in range(20)}
    assert len(made) == 20
    assert all(len(s) == 50 and signing.is_valid_secret(s) for s in made)


def test_an_id_with_a_dot_is_never_signed():
    with pytest.raises(ValueError, match="dot"):
        signing.sign_headers("a.b", "", [SECRET])


# --- verification ---------------------------------------------------------------------


# Requests signed at collection time are checked against this clock, not the wall clock.
SIGNED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def signed(body: bytes = b'{"status":"approved"}', *, secret=SECRET, at=SIGNED_AT, msg_id="m-1"):
    return signing.sign_headers(msg_id, body.decode(), [secret], at=at)


def test_check_returns_the_webhook_id_and_accepts_any_header_case():
    headers = {k.upper(): v for k, v in signed().items()}
    body = b'{"status":"approved"}'
    assert signing.check(body, headers, [OLD_SECRET, SECRET], now=SIGNED_AT) == "m-1"
    assert not signing.verify(body, headers, [SECRET])  # against the wall clock: stale
    assert signing.verify(body.decode(), signed(at=datetime.now(UTC)), [SECRET])


def test_the_tolerance_is_five_minutes_either_way():
    now = SIGNED_AT
    body = b"{}"
    for offset, ok in ((-300, True), (300, True), (-301, False), (301, False)):
        headers = signed(body, at=now + timedelta(seconds=offset))
        if ok:
            assert signing.check(body, headers, [SECRET], now=now) == "m-1"
        else:
            with pytest.raises(signing.SignatureError) as caught:
                signing.check(body, headers, [SECRET], now=now)
            assert caught.value.code == "stale_timestamp"


def with_header(name: str, value: str | None) -> dict[str, str]:
    headers = signed()
    if value is None:
        del headers[name]
    else:
        headers[name] = value
    return headers


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        (with_header("webhook-id", None), None, "missing_headers"),
        (with_header("webhook-timestamp", None), None, "missing_headers"),
        (with_header("webhook-signature", " "), None, "missing_headers"),
        (with_header("webhook-id", "a.b"), None, "invalid_signature"),
        (with_header("webhook-id", "x" * 201), None, "invalid_signature"),
        (with_header("webhook-timestamp", "1.7e9"), None, "invalid_signature"),
        (with_header("webhook-timestamp", "-5"), None, "invalid_signature"),
        (with_header("webhook-timestamp", "\uff19\uff19"), None, "invalid_signature"),
        (with_header("webhook-signature", "v1,AAAA"), None, "invalid_signature"),
        (with_header("webhook-signature", "nonsense"), None, "invalid_signature"),
        (signed(), b'{"status":"rejected"}', "invalid_signature"),
        (signed(secret=OLD_SECRET), None, "invalid_signature"),
        (signed(), b"\xff\xfe", "invalid_signature"),
    ],
)
def test_check_refusals(headers, body, code):
    with pytest.raises(signing.SignatureError) as caught:
        signing.check(body or b'{"status":"approved"}', headers, [SECRET], now=SIGNED_AT)
    assert caught.value.code == code
    assert "v1," not in str(caught.value)  # never leaks the expected signature


def test_several_signatures_junk_entries_and_asymmetric_ones_are_skipped():
    headers = signed()
    good = headers["webhook-signature"]
    headers["webhook-signature"] = f"v1a,AAAA  garbage v1,!!! v1,{'A' * 44}   {good}"
    assert signing.check(b'{"status":"approved"}', headers, [SECRET], now=SIGNED_AT) == "m-1"


def test_no_usable_secret_verifies_nothing():
    with pytest.raises(signing.SignatureError):
        signing.check(b'{"status":"approved"}', signed(), ["", "whsec_bad"], now=SIGNED_AT)


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=60), max_size=4), st.binary())
def test_check_raises_only_signature_errors(headers, body):
    with contextlib.suppress(signing.SignatureError):
        signing.check(body, headers, [SECRET])
    assert signing.verify(body, headers, [SECRET]) in (True, False)


# --- rotation -------------------------------------------------------------------------


def test_rotation_signs_with_both_secrets_during_the_grace_period_only():
    now = django_tz.now()
    rule = PostbackRule(
        kind="webhook",
        signing_secret=SECRET,
        previous_signing_secret=OLD_SECRET,
        previous_secret_expires_at=now + timedelta(hours=1),
    )
    request = PreparedRequest("POST", "https://crm.example/", '{"a":1}', {"webhook-id": "d-9"})
    both = CrmWebhook().authorize(request, rule.secrets(now))
    first, second = both.headers["webhook-signature"].split(" ")
    stamp = both.headers["webhook-timestamp"]
    assert first == spec_signature(SECRET, "d-9", stamp, b'{"a":1}')
    assert second == spec_signature(OLD_SECRET, "d-9", stamp, b'{"a":1}')
    for secret in (SECRET, OLD_SECRET):
        assert Webhook(secret).verify(b'{"a":1}', both.headers) == {"a": 1}
    assert request.headers == {"webhook-id": "d-9"}  # the planned request is left as is

    later = rule.secrets(now + timedelta(hours=1, seconds=1))
    after = CrmWebhook().authorize(request, later)
    assert after.headers["webhook-signature"] == spec_signature(
        SECRET, "d-9", after.headers["webhook-timestamp"], b'{"a":1}'
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD_SECRET).verify(b'{"a":1}', after.headers)


def test_no_secret_no_signature_headers():
    request = PreparedRequest("POST", "https://crm.example/", "{}", {"webhook-id": "d-9"})
    assert CrmWebhook().authorize(request, Secrets()) is request


# --- planned deliveries, sent to a real receiver --------------------------------------


def planned(rule: PostbackRule) -> tuple[Delivery, PreparedRequest]:
    click = factories.click(external_id="ext-1")
    services.conversion_create(click, payout=Decimal("2.5"), txid="T-1", status="approved")
    delivery = Delivery.objects.get(rule=rule)
    request = PreparedRequest(
        delivery.method,
        delivery.url,
        delivery.body,
        delivery.headers,
        delivery.success_mode,
        delivery.success_pattern,
    )
    return delivery, request


@pytest.mark.django_db
def test_webhook_id_is_the_delivery_id_on_every_attempt_with_a_fresh_timestamp(receiver, clock):
    rule = factories.rule(receiver.url + "/crm", kind="webhook", signing_secret=SECRET)
    delivery, request = planned(rule)
    assert delivery.headers["webhook-id"] == str(delivery.public_id)
    assert "webhook-signature" not in delivery.headers  # never stored: signed when sent
    receiver.script(Reply(500), Reply(200))
    transport = get_transport(delivery.kind)

    first = transport.send(request, timeout=5, secrets=rule.secrets())
    clock.at += timedelta(seconds=90)
    second = transport.send(request, timeout=5, secrets=rule.secrets())

    assert (first.outcome, second.outcome) == (Outcome.RETRY, Outcome.DELIVERED)
    one, two = receiver.received
    assert one.body == two.body == delivery.body.encode()
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == str(delivery.public_id)
    assert int(two.headers["webhook-timestamp"]) - int(one.headers["webhook-timestamp"]) == 90
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
    for got in (one, two):
        assert spec_verifies(SECRET, got.headers, got.body)
    assert two.headers["webhook-timestamp"] == str(int(clock.at.timestamp()))


@pytest.mark.django_db
def test_an_s2s_get_is_signed_over_the_empty_body(receiver):
    rule = factories.rule(receiver.url + "/pb?c={externalid}", signing_secret=SECRET)
    delivery, request = planned(rule)
    result = S2SPostback().send(request, timeout=5, secrets=rule.secrets())
    assert result.outcome == Outcome.DELIVERED
    (got,) = receiver.received
    assert (got.method, got.path, got.body) == ("GET", "/pb?c=ext-1", b"")
    assert got.headers["webhook-id"] == got.headers["Idempotency-Key"] == str(delivery.public_id)
    assert spec_verifies(SECRET, got.headers, b"")
    assert Webhook(SECRET).verify(b"", got.headers, json_parse=False) is None


@pytest.mark.django_db
def test_a_signed_s2s_post_covers_its_exact_form_body(receiver):
    rule = factories.rule(
        receiver.url + "/pb",
        signing_secret=SECRET,
        http_method="POST",
        body_format="form",
        body_template="c={externalid}&p={payout}&n=ü ✓",
    )
    _delivery, request = planned(rule)
    S2SPostback().send(request, timeout=5, secrets=rule.secrets())
    (got,) = receiver.received
    assert got.body == "c=ext-1&p=2.5&n=ü ✓".encode()
    assert spec_verifies(SECRET, got.headers, got.body)
    assert not spec_verifies(SECRET, got.headers, got.body + b"&x=1")


def test_an_unusable_secret_fails_the_attempt_without_sending(receiver):
    request = PreparedRequest("POST", receiver.url + "/crm", "{}", {"webhook-id": "d-1"})
    result = CrmWebhook().send(request, timeout=5, secrets=Secrets(signing=("whsec_short",)))
    assert result.outcome == Outcome.FAILED and result.error.startswith("Not sent")
    assert receiver.received == []


# --- docs/verify_webhook.py: the receiver example in the README -------------------------


def _docs_example():
    path = Path(__file__).resolve().parents[2] / "docs" / "verify_webhook.py"
    spec = importlib.util.spec_from_file_location("verify_webhook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _docs_example()


def test_the_docs_verify_accepts_our_signatures_with_either_secret_in_a_rotation():
    body = '{"type":"conversion.created","name":"ünï"}'
    headers = signing.sign_headers("d-1", body, [SECRET, OLD_SECRET])
    assert example.verify(SECRET, headers, body.encode()) == "d-1"
    assert example.verify([OLD_SECRET], headers, body.encode()) == "d-1"
    upper = {name.title(): value for name, value in headers.items()}
    assert example.verify([SECRET], upper, body.encode()) == "d-1"


def test_the_docs_verify_refuses_what_it_should():
    body = b'{"a":1}'
    headers = signing.sign_headers("d-1", body.decode(), [SECRET])
    now = int(headers["webhook-timestamp"])
    wrong = "whsec_" + base64.b64encode(b"w" * 32).decode()
    cases = [
        (SECRET, headers, b'{"a":2}', now),
        (wrong, headers, body, now),
        (SECRET, headers, body, now + 301),
        (SECRET, headers, body, now - 301),
        (SECRET, {**headers, "webhook-signature": "v1a," + headers["webhook-signature"][3:]},
         body, now),
        (SECRET, {k: v for k, v in headers.items() if k != "webhook-id"}, body, now),
        (SECRET, {**headers, "webhook-timestamp": "soon"}, body, now),
    ]  # fmt: skip
    for secret, sent, sent_body, at in cases:
        with pytest.raises(example.InvalidWebhook):
            example.verify(secret, sent, sent_body, now=at)
    assert example.verify(SECRET, headers, body, now=now + 300) == "d-1"


def test_the_docs_sign_is_what_our_verification_accepts():
    headers = example.sign(SECRET, "crm_1", b'{"status":"approved"}')
    assert signing.check(b'{"status":"approved"}', headers, [SECRET]) == "crm_1"


def test_the_docs_receiver_processes_each_delivery_once():
    events: list[dict] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), example.make_handler([SECRET], events.append))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        rule = PostbackRule(kind="webhook", url_template=url, field_mapping="id = {delivery.id}")
        request = CrmWebhook().prepare(rule, {"delivery.id": "d-42"})
        transport = CrmWebhook()
        first = transport.send(request, timeout=5, secrets=Secrets(signing=(SECRET,)))
        retry = transport.send(request, timeout=5, secrets=Secrets(signing=(SECRET,)))
        unsigned = transport.send(request, timeout=5)
        forged = transport.send(request, timeout=5, secrets=Secrets(signing=(OLD_SECRET,)))
    finally:
        server.shutdown()
        server.server_close()
    assert (first.outcome, first.response_body) == (Outcome.DELIVERED, "ok")
    assert (retry.outcome, retry.response_body) == (Outcome.DELIVERED, "duplicate")
    assert (unsigned.status_code, forged.status_code) == (401, 401)
    assert events == [{"id": "d-42"}]
