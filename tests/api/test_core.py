"""The API's shared parts: token authentication, model permissions, the error body, the
schema and its docs page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from tests.api.conftest import client_with, make_token
from tracker.models import APIToken

pytestmark = pytest.mark.django_db


def test_the_token_is_stored_hashed_and_authenticates():
    token, key = make_token(superuser=True)
    assert key.startswith(token.prefix + ".") and key.split(".")[1] not in token.hashed_key
    answer = client_with(key).get("/api/v1/")
    assert answer.status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert bearer.get("/api/v1/").status_code == 200


@pytest.mark.parametrize(
    "header",
    ["Token", "Token a b", "Token nope.nope", "Token \u00e9t\u00e9", "Token " + "x" * 5000],
)
def test_bad_tokens_get_401_with_the_error_body(header):
    make_token(superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    answer = client.get("/api/v1/")
    assert answer.status_code == 401, answer.content
    assert answer["WWW-Authenticate"] == "Token"
    assert set(answer.json()) == {"error", "detail"}


def test_revoked_expired_and_inactive_tokens_are_refused():
    token, key = make_token(superuser=True)
    APIToken.objects.filter(pk=token.pk).update(revoked=True)
    assert client_with(key).get("/api/v1/").json()["error"] == "invalid_token"
    _, key = make_token(expiry_date=timezone.now() - timedelta(seconds=1))
    assert client_with(key).get("/api/v1/").status_code == 401
    token, key = make_token()
    get_user_model().objects.filter(pk=token.user_id).update(is_active=False)
    assert client_with(key).get("/api/v1/").json()["error"] == "inactive_user"


def test_no_credentials_get_401():
    answer = APIClient().get("/api/v1/")
    assert answer.status_code == 401
    assert answer.json() == {
        "error": "not_authenticated",
        "detail": "Authentication credentials were not provided.",
    }


def test_schema_and_docs_are_served_without_a_cdn():
    _, key = make_token(superuser=True)
    client = client_with(key)
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "swagger-ui" in page and "cdn" not in page.lower()


def test_schema_and_docs_need_a_signed_in_user():
    """They list every resource and field: closed to anonymous callers unless
    API_SCHEMA_PUBLIC opens them."""
    schema = APIClient().get("/api/v1/schema/", {"format": "json"})
    assert schema.status_code == 401
    assert b"not_authenticated" in schema.content and b"paths" not in schema.content
    assert APIClient().get("/api/v1/docs/").status_code == 401


def test_each_token_is_throttled_on_its_own(monkeypatch):
    from tracker.api.auth import TokenRateThrottle

    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/min"})
    first = client_with(make_token(superuser=True)[1])
    second = client_with(make_token(superuser=True)[1])
    assert [first.get("/api/v1/").status_code for _ in range(3)] == [200, 200, 200]
    refused = first.get("/api/v1/")
    assert refused.status_code == 429 and refused.json()["error"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    assert second.get("/api/v1/").status_code == 200


def test_a_read_only_user_reads_but_cannot_write(api_for):
    client = api_for("view_offer")
    assert client.get("/api/v1/offers/").status_code == 200
    refused = client.post("/api/v1/offers/", {"name": "x"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"
    assert client.get("/api/v1/postback-rules/").status_code == 403


def test_an_unreachable_throttle_cache_lets_calls_through(monkeypatch):
    from django.core.cache.backends.redis import RedisCache

    from tracker.api.auth import TokenRateThrottle

    down = RedisCache("redis://127.0.0.1:1/0", {})  # nothing listens there
    monkeypatch.setattr(TokenRateThrottle, "cache", down)
    client = client_with(make_token(superuser=True)[1])
    assert client.get("/api/v1/").status_code == 200


def test_oversize_and_deeply_nested_bodies_get_json_4xx(api):
    big = '{"name": "' + "x" * 3_000_000 + '"}'
    answer = api.generic("POST", "/api/v1/offers/", big, content_type="application/json")
    assert answer.status_code == 413
    assert answer.json() == {"error": "body_too_large", "detail": "The request body is too large."}
    deep = "[" * 5000 + "]" * 5000
    for path in ("/api/v1/offers/", "/api/v1/conversions/"):
        answer = api.generic("POST", path, deep, content_type="application/json")
        assert answer.status_code == 400, (path, answer.content)
        assert answer.json()["error"] == "parse_error"


def test_every_operation_documents_its_error_answers(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error", "detail"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert {"401", "403", "429"} <= documented, (method, path)
            if "{" in path:
                assert "404" in documented, (method, path)


def test_a_token_made_in_admin_is_shown_once_and_works(admin_client, admin_user):
    page = admin_client.post(
        "/admin/tracker/apitoken/add/",
        {
            "name": "media buying tool",
            "user": admin_user.pk,
            "expiry_date_0": "",
            "expiry_date_1": "",
        },
        follow=True,
    )
    shown = [str(m) for m in page.context["messages"]]
    key = next(m.split(": ")[1].split(" - ")[0] for m in shown if m.startswith("API token"))
    token = APIToken.objects.get(name="media buying tool")
    assert token.user == admin_user and key.startswith(token.prefix + ".")
    assert key.split(".")[1] not in token.hashed_key
    assert client_with(key).get("/api/v1/").status_code == 200
    again = admin_client.get(f"/admin/tracker/apitoken/{token.pk}/change/").content.decode()
    assert key not in again and token.prefix in again


@pytest.mark.parametrize("path", ["conversions", "clicks", "deliveries", "attempts"])
def test_an_id_filter_past_64_bits_is_a_400_not_a_500(api, path):
    answer = api.get(f"/api/v1/{path}/", {"campaign": "1" + "0" * 30})
    assert answer.status_code in (200, 400), answer.content
    if answer.status_code == 400:
        assert answer.json()["error"] == "invalid"
