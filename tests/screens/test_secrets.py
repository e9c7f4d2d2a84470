"""Secrets: one definition (``postbacks.masking``) used by admin, API, preview and the
inbound log, case-insensitive; never shown to staff without the change permission, and
write-only in the API (issue 17, defects 2 and 3)."""

from __future__ import annotations

import logging
import socket

import pytest

from campaigns.models import AffiliateNetwork
from postbacks.masking import is_secret_name, mask_headers, mask_secrets, unmask_secrets
from tests import factories
from tracker.models import InboundRequest

RULES = "/api/v1/postback-rules/"
SECRET_URL = "https://ts.example/pb?c={externalid}&token=TOK-1&api_key=KEY-2&sig=SIG-3&pw=PW-4"
SECRET_HEADERS = "Authorization: Bearer BEARER-5\nX-Api-Key: APIKEY-6\nX-Source: taboola"
SECRETS = ("TOK-1", "KEY-2", "SIG-3", "PW-4", "BEARER-5", "APIKEY-6")


# --- the definition --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("a=1&Token=S&TOKEN=S&tOkEn=S", "a=1&Token=***&TOKEN=***&tOkEn=***"),
        ("https://x/?pw=S&pwd=S&Password=S", "https://x/?pw=***&pwd=***&Password=***"),
        (
            "https://x/?to=http%3A%2F%2Fx%2F%3Ftoken%3DSECRET%26a%3D1",
            "https://x/?to=http%3A%2F%2Fx%2F%3Ftoken%3D***%26a%3D1",
        ),
        (
            "https://x/?u=http%253A%252F%252Fx%252F%253Fsig%253DSECRET",
            "https://x/?u=http%253A%252F%252Fx%252F%253Fsig%253D***",
        ),
        (
            '{"click_id": "c", "Token": "S", "api_key": 12}',
            '{"click_id": "c", "Token": "***", "api_key": "***"}',
        ),
        ("https://x/?token={var:token}", "https://x/?token={var:token}"),
    ],
)
def test_every_secret_value_is_masked_whatever_its_case_or_encoding(text, masked):
    assert mask_secrets(text) == masked


@pytest.mark.parametrize(
    "name",
    ["Authorization", "Cookie", "X-Access-Key", "X-Auth", "Private-Key", "pw", "PW", "x-api-key"],
)
def test_one_definition_of_a_secret_header_for_admin_and_api(name):
    assert is_secret_name(name)
    assert mask_headers({name: "v", "X-Source": "s"}) == {name: "***", "X-Source": "s"}


def test_idempotency_key_is_not_a_secret():
    assert not is_secret_name("Idempotency-Key")


def test_a_masked_template_written_back_keeps_the_saved_values():
    shown = mask_secrets(SECRET_URL)
    assert not any(secret in shown for secret in SECRETS)
    assert unmask_secrets(shown, SECRET_URL) == SECRET_URL
    edited = shown.replace("c={externalid}", "c={externalid}&x=1")
    assert unmask_secrets(edited, SECRET_URL) == SECRET_URL.replace("&token", "&x=1&token")


# --- the inbound log ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["Token", "TOKEN", "tOkEn", "pw", "api_key"])
def test_the_inbound_log_masks_secret_parameters_in_any_case(client, name):
    click = factories.click()
    client.get(f"/cv?click_id={click.pk}&{name}=SECRET-9")
    client.post("/cv", {"click_id": str(click.pk), name: "SECRET-9"})
    client.post(
        "/cv",
        f'{{"click_id": "{click.pk}", "{name}": "SECRET-9"}}',
        content_type="application/json",
    )
    logs = list(InboundRequest.objects.values_list("query", "body"))
    assert len(logs) == 3
    assert not any("SECRET-9" in text for row in logs for text in row), logs


# --- admin: view-only staff ----------------------------------------------------------------


@pytest.mark.django_db
def test_view_only_staff_never_see_a_rules_secrets(staff_with, admin_client):
    rule = factories.rule(SECRET_URL, headers_template=SECRET_HEADERS)
    url = f"/admin/postbacks/postbackrule/{rule.pk}/change/"
    page = staff_with("view_postbackrule").get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "ts.example/pb" in text and "X-Source: taboola" in text
    assert not [secret for secret in SECRETS if secret in text]
    # Those who may change the rule edit it as it is.
    assert "TOK-1" in admin_client.get(url).content.decode()


@pytest.mark.django_db
def test_view_only_staff_never_see_a_networks_token(staff_with, admin_client):
    network = AffiliateNetwork.objects.create(name="Net", postback_token="NETTOKEN-7")
    url = f"/admin/campaigns/affiliatenetwork/{network.pk}/change/"
    page = staff_with("view_affiliatenetwork").get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "NETTOKEN-7" not in text and "token=***" in text
    assert "NETTOKEN-7" in admin_client.get(url).content.decode()


# --- API: write-only ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_never_answers_url_secrets_and_keeps_them_on_write(api, api_for):
    rule = factories.rule(SECRET_URL, headers_template=SECRET_HEADERS)
    viewer = api_for("view_postbackrule")
    body = viewer.get(f"{RULES}{rule.pk}/").json()
    shown = body["url_template"] + body["headers_template"]
    assert "ts.example/pb" in shown and not [s for s in SECRETS if s in shown]
    listed = str(viewer.get(RULES).json())
    assert not [s for s in SECRETS if s in listed]
    preview = str(viewer.get(f"{RULES}{rule.pk}/preview/").json()["request"])
    assert not [s for s in SECRETS if s in preview]
    # *** sent back keeps the saved values; a new value replaces one.
    edited = body["url_template"].replace("sig=***", "sig=NEW")
    answer = api.patch(f"{RULES}{rule.pk}/", {"url_template": edited}, format="json")
    assert answer.status_code == 200, answer.content
    rule.refresh_from_db()
    assert rule.url_template == SECRET_URL.replace("SIG-3", "NEW")
    missing = api.patch(
        f"{RULES}{rule.pk}/", {"url_template": "https://ts.example/?password=***"}, format="json"
    )
    assert missing.status_code == 400 and "url_template" in missing.json()["detail"]


# --- test sends: the web log ---------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_a_test_send_to_a_closed_port_logs_no_secret(admin_client, caplog):
    rule = factories.rule(f"http://127.0.0.1:{_closed_port()}/pb?token=TOK-1&pw=PW-4")
    with caplog.at_level(logging.INFO, logger="postbacks.preview"):
        answer = admin_client.post(f"/admin/postbacks/postbackrule/{rule.pk}/test/").json()
    assert answer["response"]["outcome"] == "failed"
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "Test postback" in logged
    assert "TOK-1" not in logged and "PW-4" not in logged
    assert "TOK-1" not in str(answer) and "PW-4" not in str(answer)
