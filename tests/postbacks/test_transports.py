"""Unit tests of answer classification and URL masking (HTTP replaced by fake responses)."""

from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError

from postbacks.masking import mask_secrets
from postbacks.transports import S2SPostback, parse_retry_after


def fake_response(status, headers=None):
    return SimpleNamespace(status_code=status, headers=headers or {})


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "delivered"), (204, "delivered"), (408, "retry"), (429, "retry"), (500, "retry"),
     (503, "retry"), (400, "failed"), (404, "failed"), (410, "failed"), (302, "failed")],
)  # fmt: skip
def test_classify(status, outcome):
    result = S2SPostback().classify(fake_response(status, {"Location": "/x"}), "", 12)
    assert (result.outcome, result.status_code, result.duration_ms) == (outcome, status, 12)
    assert bool(result.error) == (outcome != "delivered")


def test_429_reads_retry_after():
    result = S2SPostback().classify(fake_response(429, {"Retry-After": "120"}), "", 1)
    assert result.retry_after == 120


def test_redirect_is_reported_not_followed():
    result = S2SPostback().classify(fake_response(301, {"Location": "https://b/"}), "", 1)
    assert result.error == "HTTP 301: redirect to https://b/ not followed"


@pytest.mark.parametrize(
    ("value", "expected"), [("30", 30.0), ("", None), ("soon", None), (None, None)]
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date_in_the_past_is_zero():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_mask_hides_secret_parameters_only():
    url = "https://trends.example/api?api_key=SECRET&rc_uuid=abc&amount=2&token=T"
    assert mask_secrets(url) == (
        "https://trends.example/api?api_key=***&rc_uuid=abc&amount=2&token=***"
    )
    assert mask_secrets("https://x/?a=1") == "https://x/?a=1"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("ftp://x/?a={payout}", "http"),
        ("https://{externalid}.example/", "host"),
        ("https://x/?a={payuot}", "Unknown macro {payuot}"),
    ],
)
def test_validate_template_rejects(template, message):
    with pytest.raises(ValidationError, match=message):
        S2SPostback().validate_template(template)


def test_prepare_renders_a_get():
    context = {"externalid": "a&b", "delivery.id": "d-1"}
    prepared = S2SPostback().prepare("https://x/?c={externalid}&d={delivery.id}", context)
    assert (prepared.method, prepared.url) == ("GET", "https://x/?c=a%26b&d=d-1")
    assert prepared.headers == {"Idempotency-Key": "d-1"}
