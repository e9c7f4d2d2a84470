"""Destination settings through the API: the access token and the signing secret are
written, never answered; the signing secret is generated, rotated and dropped by its own
action, and answered once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks.models import PostbackRule
from postbacks.signing import is_valid_secret

pytestmark = pytest.mark.django_db

RULES = "/api/v1/postback-rules/"
TOKEN = "EAAGm0PX4ZCpsBAFakeToken-123"


def meta_rule(api, **fields) -> dict:
    body = {
        "name": "Meta purchase",
        "kind": "meta_capi",
        "account_id": "123456789012345",
        "access_token": TOKEN,
        "event_names": {"sale": "Purchase"},
        **fields,
    }
    answer = api.post(RULES, body, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


def test_the_access_token_is_written_and_never_answered(api):
    created = meta_rule(api)
    assert "access_token" not in created and created["has_access_token"] is True
    url = f"{RULES}{created['id']}/"
    assert TOKEN not in api.get(url).content.decode()
    assert TOKEN not in api.get(RULES).content.decode()
    rule = PostbackRule.objects.get()
    assert rule.access_token == TOKEN
    # An empty token keeps the saved one; clear_access_token removes it.
    assert api.patch(url, {"access_token": "", "name": "Renamed"}, format="json").status_code == 200
    rule.refresh_from_db()
    assert (rule.name, rule.access_token) == ("Renamed", TOKEN)
    answer = api.patch(url, {"clear_access_token": True}, format="json")
    assert answer.status_code == 400  # Meta needs a token: nothing is changed
    assert "access_token" in answer.json()["detail"]
    rule.refresh_from_db()
    assert rule.access_token == TOKEN


def test_a_telegram_rule_without_a_token_is_refused_with_the_field_named(api):
    answer = api.post(
        RULES,
        {"name": "Team chat", "kind": "telegram", "account_id": "-1001234567890"},
        format="json",
    )
    assert answer.status_code == 400
    assert "access_token" in answer.json()["detail"]


def test_signing_secret_is_answered_once_rotated_and_dropped(api):
    created = api.post(
        RULES, {"name": "CRM", "kind": "s2s", "url_template": "https://crm.example/pb?c={clickid}"},
        format="json",
    ).json()  # fmt: skip
    assert created["signing"] == {"signed": False, "secret_hint": "", "previous_valid_until": None}
    action = f"{RULES}{created['id']}/signing-secret/"

    first = api.post(action, {}, format="json")
    assert first.status_code == 200 and first["Cache-Control"] == "no-store"
    secret = first.json()["signing_secret"]
    assert is_valid_secret(secret) and first.json()["previous_secret_expires_at"] is None
    shown = api.get(f"{RULES}{created['id']}/").json()
    assert secret not in str(shown)
    assert shown["signing"]["signed"] is True
    assert shown["signing"]["secret_hint"] == f"…{secret[-4:]}"

    second = api.post(action, {"grace_hours": 2}, format="json").json()
    assert second["signing_secret"] != secret
    rule = PostbackRule.objects.get()
    assert rule.secrets().signing == (second["signing_secret"], secret)
    until = rule.previous_secret_expires_at
    assert timezone.now() + timedelta(hours=1.9) < until < timezone.now() + timedelta(hours=2.1)

    assert api.post(action, {"grace_hours": 500}, format="json").status_code == 400
    assert api.post(action, {"grace": 1}, format="json").status_code == 400  # unknown field
    assert api.delete(action).status_code == 204
    rule.refresh_from_db()
    assert rule.secrets().signing == ()


def test_the_signing_secret_needs_the_change_permission(api, api_for):
    rule_id = meta_rule(api)["id"]
    viewer = api_for("view_postbackrule")
    assert viewer.post(f"{RULES}{rule_id}/signing-secret/", {}, format="json").status_code == 403
    assert viewer.delete(f"{RULES}{rule_id}/signing-secret/").status_code == 403
    assert PostbackRule.objects.get().signing_secret == ""


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("slack", "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/abcdEFGHijklMNOPqrstUVWX"),
        ("discord", "https://discord.com/api/webhooks/123456789012345678/" + "aB3_-" * 10),
    ],
)
def test_a_chat_webhook_rule_keeps_its_webhook_url_write_only(api, kind, url):
    body = {"name": "Team chat", "kind": kind, "body_template": "{payout} {conversion.type}"}
    refused = api.post(RULES, {**body, "access_token": "https://evil.example/hook"}, format="json")
    assert refused.status_code == 400
    assert "webhook URL starts with" in str(refused.json()["detail"]["access_token"])

    created = api.post(RULES, {**body, "access_token": url}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["has_access_token"] is True
    secret = url.rsplit("/", 1)[1]
    assert secret not in api.get(f"{RULES}{created.json()['id']}/").content.decode()
    assert PostbackRule.objects.get().access_token == url
    schema = api.get("/api/v1/schema/").content.decode()
    assert f"{kind}: access_token (Webhook URL), body_template (Message)." in schema
