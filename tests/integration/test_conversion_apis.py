"""Meta Conversions API and TikTok Events API end to end: a click carrying the platform's
click ID and its conversion, planned by the web process, sent by a real Celery worker to a
local receiver playing the platform (PostgreSQL, Redis).

The base URLs are settings of the process that plans the delivery (this test process: the
/cv view runs here); the worker sends the planned URL and adds the token it loads from the
rule, so it needs no setting of its own."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from postbacks.models import Attempt, Delivery
from postbacks.receiver import Reply
from tests import conftest as shared
from tests import factories
from tests.conftest import campaign_with_rule, wait_until

pytestmark = pytest.mark.integration

UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile"
META_TOKEN = "EAAB+tok/en=&?#é"  # characters that mean something in a URL
TIKTOK_TOKEN = "tt-5a1f/+=?&#"
PIXEL = "1234567890123456"
PIXEL_CODE = "CQ1ABCDE2FGH3IJK4LM0"
META_OK = Reply(200, body='{"events_received": 1, "messages": [], "fbtrace_id": "Ab1"}')
TIKTOK_OK = Reply(200, body='{"code": 0, "message": "OK", "request_id": "R1", "data": {}}')


def graph_error(code: int, message: str) -> str:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Zz9"}
    return json.dumps({"error": error})


def setup(kind: str, click_param: str, **rule_fields):
    """A source named after its click-ID parameter (``fbclid``, ``ttclid``) and a rule of
    ``kind`` on its approved conversions."""
    source = factories.traffic_source(click_param, external_id_param=click_param)
    rule_fields.setdefault("retry_base_seconds", 1)
    page = rule_fields.pop("url_template", "")
    return campaign_with_rule(page, source=source, kind=kind, statuses=["approved"], **rule_fields)


def convert(client, campaign, param: str, click_id: str, txid: str, ct: str = "sale") -> str:
    """A phone's click carrying the platform's click ID, then its conversion; returns our
    click ID."""
    visitor = {"param": param, "HTTP_USER_AGENT": UA, "REMOTE_ADDR": "198.51.100.23"}
    answer = shared.convert(
        client, campaign, click_id, click_request=visitor, payout="2.35", txid=txid, ct=ct
    )
    return answer.click_id


def finished() -> Delivery | None:
    rows = Delivery.objects.filter(is_test=False, rule__isnull=False)
    done = rows.exclude(status__in=["scheduled", "sending"])
    return done.first() if rows.exists() and done.count() == rows.count() else None


def outcomes(delivery: Delivery) -> list[tuple[str, int | None]]:
    attempts = Attempt.objects.filter(delivery=delivery).order_by("number")
    return list(attempts.values_list("outcome", "status_code"))


def assert_token_never_stored(delivery: Delivery, token: str) -> None:
    stored = [delivery.url, delivery.body, json.dumps(delivery.headers), delivery.last_error]
    for attempt in Attempt.objects.filter(delivery=delivery):
        stored += [attempt.url, attempt.error, attempt.response_body]
    for fragment in (token, token[:8]):
        assert not any(fragment in text for text in stored), fragment


def test_meta_event_arrives_as_documented(worker, receiver, client, settings):
    settings.POSTBACKS_META_BASE_URL = receiver.url
    campaign, _rule = setup(
        "meta_capi", "fbclid", account_id=PIXEL, access_token=META_TOKEN,
        test_event_code="TEST777", url_template="https://shop.example/thanks",
    )  # fmt: skip
    receiver.default = META_OK
    convert(client, campaign, "fbclid", "IwAR2F4-dbP0l7Mn1Iaw", "T-100")

    (got,) = receiver.wait_for(1)
    delivery = wait_until(finished)
    assert delivery is not None and delivery.status == "delivered"
    assert got.method == "POST"
    assert urlsplit(got.path).path == f"/v25.0/{PIXEL}/events"
    assert got.query == {"access_token": META_TOKEN}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Idempotency-Key"] == str(delivery.public_id)
    document = json.loads(got.body)
    assert document["test_event_code"] == "TEST777"
    (event,) = document["data"]
    assert event["event_name"] == "Purchase"
    assert event["event_id"] == "T-100"
    assert event["action_source"] == "website"
    assert event["event_source_url"] == "https://shop.example/thanks"
    assert abs(event["event_time"] - delivery.conversion.created_at.timestamp()) < 1
    user = event["user_data"]
    assert user["fbc"].startswith("fb.1.") and user["fbc"].endswith(".IwAR2F4-dbP0l7Mn1Iaw")
    assert user["client_ip_address"] == delivery.conversion.click.ip
    assert user["client_user_agent"] == UA
    assert event["custom_data"] == {"value": 2.35, "currency": "USD", "order_id": "T-100"}
    assert outcomes(delivery) == [("delivered", 200)]
    assert Attempt.objects.get(delivery=delivery).url == delivery.url
    assert_token_never_stored(delivery, META_TOKEN)


def test_meta_expired_token_fails_after_one_attempt(worker, receiver, client, settings):
    settings.POSTBACKS_META_BASE_URL = receiver.url
    campaign, _rule = setup("meta_capi", "fbclid", account_id=PIXEL,
                            access_token=META_TOKEN, max_attempts=5)  # fmt: skip
    receiver.default = Reply(400, body=graph_error(190, "Error validating access token"))
    convert(client, campaign, "fbclid", "IwAR-x", "T-101")

    delivery = wait_until(finished)
    assert delivery is not None and delivery.status == "failed"
    assert outcomes(delivery) == [("failed", 400)]
    assert "Meta error 190 (OAuthException): the access token is invalid" in delivery.last_error
    assert len(receiver.received) == 1
    assert_token_never_stored(delivery, META_TOKEN)


def test_meta_rate_limits_are_retried(worker, receiver, client, settings):
    settings.POSTBACKS_META_BASE_URL = receiver.url
    campaign, _rule = setup("meta_capi", "fbclid", account_id=PIXEL,
                            access_token=META_TOKEN, max_attempts=5)  # fmt: skip
    receiver.script(
        Reply(400, body=graph_error(4, "Application request limit reached")),
        Reply(429, body="", headers={"Retry-After": "1"}),
    )
    receiver.default = META_OK
    convert(client, campaign, "fbclid", "IwAR-y", "T-102")

    assert len(receiver.wait_for(3)) == 3
    delivery = wait_until(finished)
    assert delivery is not None and delivery.status == "delivered"
    assert outcomes(delivery) == [("retry", 400), ("retry", 429), ("delivered", 200)]
    bodies = {got.body for got in receiver.received}
    assert len(bodies) == 1  # every attempt sends what was planned
    assert {got.query["access_token"] for got in receiver.received} == {META_TOKEN}


def test_tiktok_event_arrives_as_documented(worker, receiver, client, settings):
    settings.POSTBACKS_TIKTOK_BASE_URL = receiver.url
    campaign, _rule = setup("tiktok", "ttclid", account_id=PIXEL_CODE,
                            access_token=TIKTOK_TOKEN, max_attempts=5)  # fmt: skip
    receiver.script(Reply(200, body='{"code": 40100, "message": "Too many requests"}'))
    receiver.default = TIKTOK_OK
    convert(client, campaign, "ttclid", "E.C.P.abc123", "T-200", ct="lead")

    assert len(receiver.wait_for(2)) == 2
    delivery = wait_until(finished)
    assert delivery is not None and delivery.status == "delivered"
    assert outcomes(delivery) == [("retry", 200), ("delivered", 200)]
    got = receiver.received[-1]
    assert (got.method, got.path) == ("POST", "/open_api/v1.3/event/track/")
    assert got.headers["Access-Token"] == TIKTOK_TOKEN
    assert got.headers["Idempotency-Key"] == str(delivery.public_id)
    document = json.loads(got.body)
    assert (document["event_source"], document["event_source_id"]) == ("web", PIXEL_CODE)
    assert "test_event_code" not in document
    (event,) = document["data"]
    assert (event["event"], event["event_id"]) == ("Lead", "T-200")
    assert event["user"] == {
        "ttclid": "E.C.P.abc123",
        "ip": delivery.conversion.click.ip,
        "user_agent": UA,
    }
    assert event["properties"] == {"value": 2.35, "currency": "USD"}
    assert_token_never_stored(delivery, TIKTOK_TOKEN)


def test_tiktok_revoked_token_fails_after_one_attempt(worker, receiver, client, settings):
    settings.POSTBACKS_TIKTOK_BASE_URL = receiver.url
    campaign, _rule = setup("tiktok", "ttclid", account_id=PIXEL_CODE,
                            access_token=TIKTOK_TOKEN, max_attempts=5)  # fmt: skip
    receiver.default = Reply(200, body='{"code": 40105, "message": "Access token is incorrect"}')
    convert(client, campaign, "ttclid", "E.C.P.zzz", "T-201")

    delivery = wait_until(finished)
    assert delivery is not None and delivery.status == "failed"
    assert outcomes(delivery) == [("failed", 200)]
    assert "TikTok error 40105" in delivery.last_error
    assert len(receiver.received) == 1
