"""The rule form's helpers: sample values, the preview of an unsaved rule, the test send."""

import json
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbacks.models import Attempt, Delivery, PostbackRule
from postbacks.preview import (
    SAMPLE_DELIVERY_ID,
    describe_click,
    render_preview,
    sample_context,
    send_test,
)
from postbacks.receiver import Reply
from tests import factories
from tests.conftest import examples
from tracker import macros
from tracker.models import Click, Conversion

# Empty for an approved conversion that was just created, as they would be.
EMPTY_BY_NATURE = {"status.previous", "rejection_reason", "rejection_reason.label"}


def unsaved_rule(**fields) -> PostbackRule:
    fields.setdefault("url_template", "https://pb.example/pb?c={externalid}&p={payout}")
    return PostbackRule(name="Draft", **fields)


def test_sample_context_has_a_value_for_every_recorded_macro():
    context = sample_context()
    for entry in macros.catalogue():
        name = entry["name"]
        if entry["deprecated"] or name.startswith("var:"):
            continue
        expected_empty = not entry["recorded"] or name in EMPTY_BY_NATURE
        assert bool(context[name]) != expected_empty, name
        for alias in entry["aliases"]:
            assert context[alias] == context[name]
    assert (context["externalid"], context["payout"], context["txid"]) == (
        "ts-click-123", "2.5", "TX-1001",
    )  # fmt: skip
    assert context["delivery.id"] == SAMPLE_DELIVERY_ID


def test_sample_context_fills_the_named_variables_the_rule_uses():
    rule = unsaved_rule(headers_template="X-Site: {var:site}")
    assert sample_context(rule)["var:site"] == "site-value"


@pytest.mark.django_db
def test_sample_context_of_a_real_conversion():
    click = factories.click(external_id="tbl-42")
    conversion = Conversion.objects.create(click=click, txid="T-9", payout=Decimal("3.10"))
    rule = unsaved_rule(event_type="conversion")

    context = sample_context(rule, Conversion(pk=conversion.pk))  # relations loaded for it

    assert (context["externalid"], context["payout"], context["txid"]) == ("tbl-42", "3.1", "T-9")
    assert (context["campaign.name"], context["offer.name"]) == ("Campaign", "Offer")
    assert context["event.type"] == "conversion"


@pytest.mark.django_db
def test_sample_context_of_a_real_click_for_a_click_rule():
    click = factories.click(external_id="tbl-43", var1="site-9")
    rule = unsaved_rule(event_type="click")

    context = sample_context(rule, click=Click(pk=click.pk))  # relations loaded for it

    assert (context["externalid"], context["click.id"], context["var1"]) == (
        "tbl-43", str(click.pk), "site-9",
    )  # fmt: skip
    assert (context["campaign.name"], context["offer.name"]) == ("Campaign", "Offer")
    assert context["event.type"] == "click"
    # No conversion behind a click rule: its macros render empty, as they are sent.
    assert (context["payout"], context["txid"], context["status"]) == ("", "", "")
    assert context["delivery.id"] == SAMPLE_DELIVERY_ID
    assert (
        describe_click(click, rule) == f"Click {click.pk}: campaign Campaign, external ID tbl-43."
    )


@pytest.mark.django_db
def test_sample_context_of_a_real_click_for_a_conversion_rule():
    click = factories.click(external_id="tbl-44")
    rule = unsaved_rule(event_type="conversion")

    context = sample_context(rule, click=click)

    assert (context["externalid"], context["click.id"]) == ("tbl-44", str(click.pk))
    assert (context["payout"], context["revenue"], context["txid"], context["status"]) == (
        "2.5", "2.5", "TX-1001", "approved",
    )  # fmt: skip
    assert context["event.type"] == "conversion"
    assert describe_click(click, rule).endswith(", with sample conversion values.")


@pytest.mark.django_db
def test_a_conversion_and_a_click_together_are_refused():
    click = factories.click()
    conversion = Conversion.objects.create(click=click, txid="T-2")
    rule = unsaved_rule()
    for call in (sample_context, render_preview, send_test):
        with pytest.raises(ValueError, match="not both"):
            call(rule, conversion, click=click)
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_preview_of_an_impression_rule_for_a_real_click():
    click = factories.click(external_id="imp-1")
    rule = unsaved_rule(
        event_type="impression", url_template="https://pb.example/i?c={externalid}&p={payout}"
    )
    preview = render_preview(rule, click=click)
    assert preview["url"] == "https://pb.example/i?c=imp-1&p="
    assert preview["errors"] == []


def test_preview_of_a_post_json_rule():
    rule = unsaved_rule(
        http_method="POST",
        body_format="json",
        body_template='{"id": "{externalid}", "value": {payout|0}}',
        headers_template="X-Source: {trafficsource.name}",
    )
    assert render_preview(rule) == {
        "method": "POST",
        "url": "https://pb.example/pb?c=ts-click-123&p=2.5",
        "headers": {
            "Idempotency-Key": SAMPLE_DELIVERY_ID,
            "Content-Type": "application/json",
            "X-Source": "Taboola",
        },
        "body": '{"id": "ts-click-123", "value": 2.5}',
        "errors": [],
        "warnings": [],
    }


def test_preview_lists_the_errors_of_bad_templates_and_still_renders():
    rule = unsaved_rule(
        url_template="https://pb.example/pb?c={externalid}&p={payuot}",
        http_method="POST",
        body_format="json",
        body_template='{"id": {externalid}}',
        headers_template="Host: evil.example\nX-A: {click.id}",
        success_mode="regex",
        success_pattern="(a+)+",
    )
    preview = render_preview(rule)
    assert preview["url"] == "https://pb.example/pb?c=ts-click-123&p={payuot}"
    assert preview["body"] == '{"id": ts-click-123}'
    errors = preview["errors"]
    assert errors[0] == "Postback URL: Unknown macro {payuot}; did you mean {payout}?"
    assert [e.split(":")[0] for e in errors] == [
        "Postback URL", "Body template", "Headers", "Expected body",
    ]  # fmt: skip
    assert "Not valid JSON" in errors[1]


def test_preview_of_an_unknown_kind_answers_an_error():
    preview = render_preview(unsaved_rule(kind="carrier-pigeon"))
    assert preview["errors"] == ["Destination: unknown kind 'carrier-pigeon'."]
    assert preview["url"] == ""


# Fragments that make macros, broken macros, JSON, header lines and regexes.
PIECES = [*'{}|:=,*"\\ \r\n\x00a1é&?/.()+[', "{payout", "externalid}", "{var:", "Host", ": "]
TEMPLATE_TEXT = st.lists(st.sampled_from(PIECES), max_size=16).map("".join)


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    url=TEMPLATE_TEXT,
    body=TEMPLATE_TEXT,
    headers=TEMPLATE_TEXT,
    pattern=TEMPLATE_TEXT,
    method=st.sampled_from(["GET", "POST", "", "PUT"]),
    body_format=st.sampled_from(["none", "form", "json", "xml"]),
    mode=st.sampled_from(["status", "contains", "regex"]),
)
def test_preview_never_raises(url, body, headers, pattern, method, body_format, mode):
    rule = unsaved_rule(
        url_template="https://x/" + url if len(url) % 2 else url,
        http_method=method,
        body_format=body_format,
        body_template=body,
        headers_template=headers,
        success_mode=mode,
        success_pattern=pattern,
    )
    preview = render_preview(rule)
    assert set(preview) == {"method", "url", "headers", "body", "errors", "warnings"}
    assert all(isinstance(message, str) for message in preview["errors"] + preview["warnings"])
    assert not [e for e in preview["errors"] if e.startswith("Could not")]  # no hidden crash
    for value in preview["headers"].values():
        assert "\r" not in value and "\n" not in value


# --- send_test ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_send_test_against_a_receiver(receiver, django_user_model):
    receiver.script(Reply(200, body='{"success": true}'))
    click = factories.click(external_id="tbl-7")
    rule = factories.rule(
        receiver.url + "/pb?c={externalid}&p={payout}",
        http_method="POST",
        body_format="json",
        body_template='{"click": "{externalid}", "value": {payout|0}}',
        success_mode="contains",
        success_pattern='"success": true',
        disable_after_failures=1,
    )
    user = django_user_model.objects.create(username="ana")

    delivery, attempt = send_test(rule, user=user)

    (got,) = receiver.received
    assert got.path == "/pb?c=tbl-7&p=2.5"  # the latest click, a sample payout
    assert json.loads(got.body) == {"click": "tbl-7", "value": 2.5}
    assert got.headers["Idempotency-Key"] == str(delivery.public_id)
    assert (delivery.status, delivery.is_test, delivery.rule, delivery.click) == (
        "delivered", True, rule, click,
    )  # fmt: skip
    assert (delivery.event_detail, delivery.success_mode) == ("test sent by ana", "contains")
    assert (attempt.number, attempt.outcome, attempt.status_code) == (1, "delivered", 200)
    assert attempt.response_body == '{"success": true}'
    assert list(Delivery.objects.all()) == [delivery]
    assert list(Attempt.objects.all()) == [attempt]


@pytest.mark.django_db
def test_send_test_uses_the_conversion_given(receiver):
    click = factories.click(external_id="tbl-8")
    conversion = Conversion.objects.create(click=click, txid="T-1", payout=Decimal("9.5"))
    rule = factories.rule(receiver.url + "/pb?c={externalid}&p={payout}&t={txid}")

    delivery, attempt = send_test(rule, conversion)

    assert receiver.received[0].query == {"c": "tbl-8", "p": "9.5", "t": "T-1"}
    assert (delivery.conversion, delivery.click, attempt.outcome) == (
        conversion, click, "delivered",
    )  # fmt: skip


@pytest.mark.django_db
def test_send_test_uses_the_click_given(receiver):
    chosen = factories.click(external_id="chosen")
    factories.click(chosen.campaign, external_id="newer")  # the most recent: not used
    rule = factories.rule(receiver.url + "/pb?c={externalid}&id={click.id}", event_type="click")

    delivery, attempt = send_test(rule, click=chosen)

    assert receiver.received[0].query == {"c": "chosen", "id": str(chosen.pk)}
    assert (delivery.click, delivery.conversion, delivery.traffic_source_id) == (
        chosen, None, chosen.traffic_source_id,
    )  # fmt: skip
    assert (delivery.event_type, attempt.outcome) == ("click", "delivered")


@pytest.mark.django_db
def test_send_test_picks_a_click_in_the_rule_scope(receiver):
    inside = factories.traffic_source("Outbrain")
    in_scope = factories.click(factories.campaign(inside), external_id="in-scope")
    factories.click(external_id="newer-elsewhere")
    rule = factories.rule(receiver.url + "/pb?c={externalid}", sources=[inside])

    delivery, _ = send_test(rule)

    assert receiver.received[0].query == {"c": "in-scope"}
    assert delivery.click == in_scope


@pytest.mark.django_db
def test_send_test_without_any_click_uses_sample_values(receiver):
    rule = unsaved_rule(url_template=receiver.url + "/pb?c={externalid}&p={payout}")

    delivery, attempt = send_test(rule)

    assert receiver.received[0].query == {"c": "ts-click-123", "p": "2.5"}
    assert (delivery.click, delivery.rule, delivery.is_test) == (None, None, True)
    assert attempt.outcome == "delivered"


@pytest.mark.django_db
def test_a_failing_test_is_not_retried_and_does_not_count(receiver):
    receiver.default = Reply(500, body="down")
    rule = factories.rule(receiver.url + "/pb?c={externalid}", disable_after_failures=1)

    delivery, attempt = send_test(rule)

    assert len(receiver.received) == 1
    assert (delivery.status, delivery.last_status_code) == ("failed", 500)
    assert delivery.last_error == "HTTP 500 (a test is not retried)"
    assert (attempt.outcome, attempt.status_code, attempt.response_body) == (
        "failed", 500, "down",
    )  # fmt: skip
    rule.refresh_from_db()
    assert (rule.is_active, rule.consecutive_failures) == (True, 0)


@pytest.mark.django_db
@override_settings(POSTBACKS_ALLOW_PRIVATE_NETWORKS=False)
def test_send_test_respects_the_private_network_guard(receiver):
    rule = factories.rule(receiver.url + "/pb?c={externalid}")

    delivery, attempt = send_test(rule)

    assert receiver.received == []
    assert delivery.status == "failed"
    assert "private network" in attempt.error


@pytest.mark.django_db
def test_send_test_refuses_a_rule_with_errors(receiver):
    rule = unsaved_rule(
        url_template=receiver.url + "/pb?c={externalid}", headers_template="Host: x"
    )
    with pytest.raises(ValidationError, match="Host is set by the HTTP client"):
        send_test(rule)
    assert receiver.received == []
    assert not Delivery.objects.exists()
