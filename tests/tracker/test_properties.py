"""Property tests (hypothesis) on inbound parsing and on /c and /cv, in process and over HTTP.

Properties: the form never raises and what it accepts fits the columns; the endpoints never
answer 5xx; nothing is half-written (a click per 302, a conversion per "ok" answer, each
conversion with its inbound-log row). Example counts are kept small: the module runs in
well under a minute.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests import factories
from tests.conftest import examples
from tracker.forms import PARAM_FIELDS, PAYOUT_LIMIT, ConversionPostbackForm
from tracker.models import Click, Conversion, InboundRequest

FAST = settings(
    max_examples=examples(80),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HTTP = settings(FAST, max_examples=examples(30))
FIELDS = ["click_id", "cf_click_id", "payout", "txid", "ct", "status", "payout_currency",
          "token", *PARAM_FIELDS[:3], "param20", "unknown"]  # fmt: skip

payouts = st.one_of(
    st.from_regex(r"-?\d{1,22}(\.\d{1,22})?([eE][-+]?\d{1,9})?", fullmatch=True),
    st.sampled_from(["9999999999.9999995", "1e1000000", "-1e1000000", "Infinity", "sNaN"]),
    st.text(max_size=30),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
)
statuses = st.one_of(
    st.sampled_from(["APPROVED", "Pending", "rejected ", ""]), st.text(max_size=12)
)
text = st.text(max_size=40)
# Mostly ordinary text; also lone surrogates and control characters (JSON "\ud800" escapes
# decode to them).
any_text = st.one_of(
    text, text, st.text(st.characters(categories=["Cs", "Cc", "L", "N"]), min_size=1, max_size=8)
)
# Header values http.client can send: Latin-1, no CR/LF, no surrounding whitespace.
header_text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=40).map(
    str.strip
)


def values(click_ids: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, str]]:
    """A click ID plus up to four other fields (more would rarely all be valid at once)."""
    strategies = {name: any_text for name in FIELDS if name not in ("click_id", "cf_click_id")}
    strategies["cf_click_id"] = st.one_of(click_ids, any_text)
    strategies |= {
        "payout": payouts,
        "status": statuses,
        "payout_currency": st.one_of(st.sampled_from(["usd", "EUR", "US\x00"]), text),
    }
    others = st.lists(st.sampled_from(sorted(strategies)), unique=True, max_size=4).flatmap(
        lambda names: st.fixed_dictionaries({name: strategies[name] for name in names})
    )
    return st.tuples(click_ids, others).map(lambda pair: {"click_id": pair[0], **pair[1]})


@given(data=values(st.one_of(st.uuids().map(str), st.uuids().map(str), any_text)))
@example(data={"click_id": str(uuid.UUID(int=1)), "payout": "9999999999.9999995"})
@example(data={"click_id": str(uuid.UUID(int=1)), "txid": "\ud800", "status": "Pending"})
@example(data={"click_id": str(uuid.UUID(int=1)), "payout_currency": "eur\n"})
@settings(FAST, max_examples=examples(300))
def test_form_never_raises_and_accepts_only_storable_values(data):
    form = ConversionPostbackForm(data)
    if not form.is_valid():
        assert form.error_code().startswith(("invalid_", "missing_"))
        return
    cleaned = form.cleaned_data
    assert isinstance(form.click_uuid, uuid.UUID)
    payout = cleaned["payout"]
    if payout is not None:
        assert payout.is_finite() and payout.copy_abs() < PAYOUT_LIMIT
        assert payout == payout.quantize(Decimal("0.000001"))
    assert len(cleaned["status"]) <= 64  # mapped to a status by the view, per network
    assert len(cleaned["payout_currency"]) in (0, 3)
    for name in ("txid", "ct", "status", "rejection_reason", "token", *PARAM_FIELDS):
        assert "\x00" not in cleaned[name]
        cleaned[name].encode("utf-8")


def click_ids(click: Click) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(str(click.pk)), st.uuids().map(str), any_text, st.just(str(click.pk).upper())
    )


def assert_nothing_half_written() -> None:
    """Every conversion has its accepted log row; every accepted row has its conversion."""
    accepted = InboundRequest.objects.filter(outcome="accepted")
    assert accepted.count() == Conversion.objects.count()
    assert set(accepted.values_list("conversion_id", flat=True)) == set(
        Conversion.objects.values_list("pk", flat=True)
    )


def assert_no_database_refusal(response) -> None:
    """What passed validation must fit the columns: the database never refuses it."""
    assert response.status_code < 500, response.content
    if response.status_code == 400:
        assert response.json()["error"] != "invalid_request", response.json()


def send(client_get, client_post, mode: str, fields: dict[str, str], headers: dict):
    if mode != "json":  # URL and form encoding cannot carry lone surrogates
        fields = {k: v.encode("utf-8", "replace").decode() for k, v in fields.items()}
    if mode == "query":
        return client_get(fields, headers)
    if mode == "form":
        return client_post(fields, None, headers)
    return client_post(json.dumps(fields), "application/json", headers)


@pytest.mark.django_db
@given(
    data=st.data(),
    mode=st.sampled_from(["query", "form", "json"]),
    user_agent=text,
    forwarded=text,
)
@FAST
def test_conversion_postback_in_process(client, data, mode, user_agent, forwarded):
    click = Click.objects.first() or factories.click()
    fields = data.draw(values(click_ids(click)))
    headers = {"HTTP_USER_AGENT": user_agent, "HTTP_X_FORWARDED_FOR": forwarded}
    before = Conversion.objects.count()

    def get(params, meta):
        return client.get("/cv", params, **meta)

    def post(body, content_type, meta):
        if content_type:
            return client.post("/cv", body, content_type=content_type, **meta)
        return client.post("/cv", body, **meta)

    response = send(get, post, mode, fields, headers)
    assert_no_database_refusal(response)
    created = response.status_code == 200 and response.json()["status"] == "ok"
    assert Conversion.objects.count() == before + int(created)
    assert_nothing_half_written()


@pytest.mark.django_db
@given(query=st.dictionaries(text, text, max_size=5), user_agent=text, referrer=text)
@FAST
def test_click_in_process(client, query, user_agent, referrer):
    campaign = (
        factories.campaign() if not Click.objects.exists() else Click.objects.first().campaign
    )
    before = Click.objects.count()
    response = client.get(
        f"/c/{campaign.key}", query, HTTP_USER_AGENT=user_agent, HTTP_REFERER=referrer
    )
    assert response.status_code == 302
    assert Click.objects.count() == before + 1


@pytest.fixture
def http_click(transactional_db):
    return factories.click()


@given(
    data=st.data(),
    mode=st.sampled_from(["query", "form", "json"]),
    user_agent=header_text,
    token=header_text,
)
@HTTP
def test_conversion_postback_over_http(live_server, http_click, data, mode, user_agent, token):
    fields = data.draw(values(click_ids(http_click)))
    headers = {"User-Agent": user_agent, "X-Postback-Token": token}
    url = f"{live_server.url}/cv"
    before = Conversion.objects.count()

    def get(params, meta):
        return requests.get(url, params=params, headers=meta, timeout=10)

    def post(body, content_type, meta):
        if content_type:
            meta = {**meta, "Content-Type": content_type}
            return requests.post(url, data=body.encode(), headers=meta, timeout=10)
        return requests.post(url, data=body, headers=meta, timeout=10)

    response = send(get, post, mode, fields, headers)
    assert_no_database_refusal(response)
    created = response.status_code == 200 and response.json()["status"] == "ok"
    assert Conversion.objects.count() == before + int(created)
    assert_nothing_half_written()


@given(query=st.dictionaries(text, text, max_size=5), user_agent=header_text, referrer=header_text)
@HTTP
def test_click_over_http(live_server, http_click, query, user_agent, referrer):
    before = Click.objects.count()
    response = requests.get(
        f"{live_server.url}/c/{http_click.campaign.key}",
        params=query,
        headers={"User-Agent": user_agent, "Referer": referrer},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    assert Click.objects.count() == before + 1
    assert Click.objects.filter(pk=response.cookies["cf_click_id"]).exists()
