"""Schema-driven fuzzing of ``/api/v1/`` with schemathesis against a live server.

Every operation of the OpenAPI schema the server publishes (``/api/v1/schema/``) is called
with generated requests (schemathesis's examples and fuzzing phases; valid and invalid
inputs) as a superuser by token, over real HTTP to pytest-django's ``live_server``
on the test database. Each response must not be a 5xx (``not_a_server_error``), its status
must be one the schema documents for the operation (``status_code_conformance``: the error
statuses come from ``tracker.api.schema.error_responses``), and it must match the schema's
response definition for that status (``response_schema_conformance``).

The run is reproducible: a fixed seed, derandomized Hypothesis, no example database, and
a bounded number of examples per operation. Seed data (a traffic source, a network, an
offer, a campaign, a rule, a click, a conversion, a delivery with an attempt) gives the
read-by-ID operations rows to find; DELETEs may remove it, which is fine.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import requests
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.specs.openapi.checks import status_code_conformance

from postbacks.models import Attempt
from tests import factories
from tests.api.conftest import make_token
from tests.conftest import examples
from tracker.api.auth import TokenRateThrottle
from tracker.models import Conversion

pytestmark = [pytest.mark.timeout(600)]

SEED = 20261
MAX_EXAMPLES = examples(25)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
RECEIVER = "http://127.0.0.1:9/postback?cid={external_id}"


def _seed() -> None:
    source = factories.traffic_source("Fuzz source")
    offer = factories.offer("Fuzz offer")
    campaign = factories.campaign(source, offer, name="Fuzz campaign")
    factories.rule(RECEIVER, sources=[source], name="Fuzz rule")
    click = factories.click(campaign)
    conversion = Conversion.objects.create(click=click, txid="fuzz-1", payout=Decimal("2.50"))
    delivery = factories.delivery(
        RECEIVER, click=click, conversion=conversion, traffic_source=source, attempt_count=1
    )
    Attempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=timezone.now(),
        method="GET",
        url=RECEIVER,
        status_code=500,
        outcome="retry",
    )


def _schema() -> dict:
    """The OpenAPI document ``/api/v1/schema/`` serves, built the way its view builds it."""
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


# Loaded at collection, so that each operation is a test item of its own. The lazy loader
# (schemathesis.pytest.from_fixture, which could load the schema from the live server) fails
# on pytest 9.2 (schemathesis 4.32.5 sets Function._nodeid, which pytest 9.2 no longer has);
# test_schema_served_is_schema_fuzzed checks the live server serves this same schema.
schema = schemathesis.openapi.from_dict(_schema())
schema.config.seed = SEED
schema.config.update(request_timeout=30)
# Examples and fuzzing (valid and invalid requests). The coverage phase (boundary values of
# every parameter) more than doubles the run (~5 min more on 2 cores); left out for time.
schema.config.phases.update(phases=["examples", "fuzzing"])
schema.config.generation.update(
    max_examples=MAX_EXAMPLES,
    deterministic=True,
    # The token comes from the fixture below, not from generated security parameters.
    with_security_parameters=False,
)


@pytest.fixture
def token(live_server, transactional_db, monkeypatch) -> str:
    """A superuser's token, with seed data in the live server's database."""
    # A few thousand requests in a couple of minutes: the per-token throttle (1200/min by
    # default) would answer 429 to most of them and leave little fuzzed.
    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": None})
    _seed()
    return make_token(superuser=True)[1]


@pytest.mark.integration
def test_schema_served_is_schema_fuzzed(live_server, token):
    response = requests.get(
        f"{live_server.url}/api/v1/schema/",
        params={"format": "json"},
        headers={"Authorization": f"Token {token}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(_schema()))


@pytest.mark.integration
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case, live_server, token):
    case.call_and_validate(
        base_url=live_server.url, headers={"Authorization": f"Token {token}"}, checks=CHECKS
    )


# --- error statuses the server answers are documented ---------------------------------------


def documented(method: str, path: str) -> set[int]:
    """The statuses the schema documents for an operation."""
    return {int(code) for code in _schema()["paths"][path][method.lower()]["responses"]}


@pytest.mark.django_db
def test_a_protected_delete_answers_a_documented_409(api):
    offer = factories.offer("Used")
    factories.campaign(factories.traffic_source("Source"), offer)
    response = api.delete(f"/api/v1/offers/{offer.pk}/")
    assert response.status_code == 409 and response.json()["error"] == "protected"
    for resource in ("traffic-sources", "affiliate-networks", "offers", "landers", "campaigns"):
        assert 409 in documented("DELETE", f"/api/v1/{resource}/{{id}}/"), resource
    assert 409 not in documented("DELETE", "/api/v1/postback-rules/{id}/")  # nothing protects


@pytest.mark.django_db
def test_a_page_or_cursor_that_does_not_exist_answers_a_documented_404(api):
    response = api.get("/api/v1/offers/", {"page": 99})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert 404 in documented("GET", "/api/v1/offers/")
    response = api.get("/api/v1/deliveries/", {"cursor": "garbage"})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert 404 in documented("GET", "/api/v1/deliveries/")
    assert 404 not in documented("GET", "/api/v1/macros/")  # not paginated, no id


@pytest.mark.django_db
def test_content_negotiation_refusals_are_documented(api):
    response = api.post("/api/v1/offers/", "<offer/>", content_type="application/xml")
    assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"
    assert 415 in documented("POST", "/api/v1/offers/")
    assert 415 not in documented("GET", "/api/v1/offers/")  # no body
    response = api.get("/api/v1/offers/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 406 and response.json()["error"] == "not_acceptable"
    assert 406 in documented("GET", "/api/v1/offers/")
