"""The rule form's destination settings: secrets (the access token, the signing secret) are
never rendered back, a blank entry keeps them, and a new signing secret is shown once."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from postbacks.models import PostbackRule
from postbacks.signing import is_valid_secret
from tests.postbacks.test_rule_admin import RULES, form_data, page

pytestmark = pytest.mark.django_db


def save(client, rule: PostbackRule | None = None, **overrides):
    url = f"{RULES}{rule.pk}/change/" if rule else f"{RULES}add/"
    return client.post(url, form_data(**overrides), follow=True)


def test_a_new_signing_secret_is_shown_once_and_then_masked(admin_client):
    answer = save(admin_client, new_signing_secret="on")
    assert answer.status_code == 200
    rule = PostbackRule.objects.get()
    assert is_valid_secret(rule.signing_secret)
    assert rule.signing_secret in page(answer)  # the message, once
    again = admin_client.get(f"{RULES}{rule.pk}/change/")
    assert rule.signing_secret not in page(again)
    assert f"whsec_…{rule.signing_secret[-4:]}" in page(again)


def test_replacing_the_secret_keeps_the_old_one_signing_for_the_grace_period(admin_client):
    save(admin_client, new_signing_secret="on")
    rule = PostbackRule.objects.get()
    first = rule.signing_secret
    save(admin_client, rule, new_signing_secret="on")
    rule.refresh_from_db()
    assert rule.signing_secret != first
    assert rule.previous_signing_secret == first
    assert rule.previous_secret_expires_at > timezone.now() + timedelta(hours=23)
    assert rule.secrets().signing == (rule.signing_secret, first)
    later = timezone.now() + timedelta(hours=25)
    assert rule.secrets(later).signing == (rule.signing_secret,)


def test_stop_signing_drops_both_secrets(admin_client):
    save(admin_client, new_signing_secret="on")
    rule = PostbackRule.objects.get()
    save(admin_client, rule, new_signing_secret="on")
    save(admin_client, rule, stop_signing="on")
    rule.refresh_from_db()
    assert (rule.signing_secret, rule.previous_signing_secret) == ("", "")
    assert rule.secrets().signing == ()


def test_new_secret_and_stop_signing_together_are_refused(admin_client):
    answer = save(admin_client, new_signing_secret="on", stop_signing="on")
    assert "Choose either a new secret or no signing." in page(answer)
    assert not PostbackRule.objects.exists()


def test_the_access_token_is_never_rendered_and_a_blank_entry_keeps_it(admin_client):
    token = "EAAB-secret-token-123"
    save(admin_client, access_token=token)
    rule = PostbackRule.objects.get()
    assert rule.access_token == token
    form = page(admin_client.get(f"{RULES}{rule.pk}/change/"))
    assert token not in form
    assert re.search(r'<input type="password" name="access_token"[^>]*>', form)
    save(admin_client, rule, access_token="", name="Renamed")
    rule.refresh_from_db()
    assert (rule.name, rule.access_token) == ("Renamed", token)
    save(admin_client, rule, clear_access_token="on")
    rule.refresh_from_db()
    assert rule.access_token == ""


def test_event_names_must_map_types_to_names(admin_client):
    answer = save(admin_client, event_names='{"sale": 3}')
    assert "conversion type -&gt; event name" in page(answer)
    save(admin_client, event_names='{" Sale ": " Purchase "}')
    assert PostbackRule.objects.get().event_names == {"sale": "Purchase"}
