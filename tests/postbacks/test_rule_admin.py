"""The rule form, its preview and test endpoints, and the rule list's actions, through the
Django test client as a superuser and as staff without the change permission."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from campaigns.models import AffiliateNetwork
from postbacks.models import Attempt, Delivery, PostbackRule
from postbacks.receiver import Reply
from tests import factories
from tracker.models import Conversion, RejectionReason

pytestmark = pytest.mark.django_db

RULES = "/admin/postbacks/postbackrule/"
PREVIEW = f"{RULES}preview/"


def form_data(**overrides) -> dict:
    """Every field of the rule form, as a browser posts it (unticked boxes left out)."""
    data = {
        "name": "Taboola lead", "event_type": "conversion", "is_active": "on",
        "trigger": "both", "conversion_types": "", "delay_seconds": "0",
        "kind": "s2s", "http_method": "GET",
        "url_template": "https://ts.example/pb?c={externalid}&r={payout}",
        "body_format": "none", "body_template": "", "headers_template": "",
        "success_mode": "status", "success_pattern": "", "timeout_seconds": "10",
        "max_attempts": "10", "retry_base_seconds": "60", "disable_after_failures": "0",
    }  # fmt: skip
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def page(response) -> str:
    return response.content.decode()


@pytest.fixture
def viewer(client):
    """Logged-in staff who may view rules (and the log) but change nothing."""
    user = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_postbackrule", "view_delivery", "view_attempt"]
        )
    )
    client.force_login(user)
    return client


@pytest.fixture
def conversion():
    click = factories.click(external_id="ext-42")
    return Conversion.objects.create(
        click=click, txid="TX-9", conversion_type="sale", status="approved",
        payout=Decimal("4.20"), currency="EUR",
    )  # fmt: skip


def waiting(rule, count: int) -> list[Delivery]:
    return [factories.delivery("https://ts.example/pb", rule=rule) for _ in range(count)]


# --- the form ---------------------------------------------------------------------------


def test_add_a_rule_with_every_field(admin_client):
    source = factories.traffic_source()
    campaign = factories.campaign(source)
    offer = campaign.campaign_offers.get().offer
    network = AffiliateNetwork.objects.get()
    fraud = RejectionReason.objects.get(code="fraud")
    data = form_data(
        name="CRM webhook", trigger="changed", replaces_global="on",
        campaigns=[campaign.pk], offers=[offer.pk], traffic_sources=[source.pk],
        affiliate_networks=[network.pk], statuses=["rejected", "refunded"],
        conversion_types="lead, Sale,lead", rejection_reasons=[fraud.pk], first_only="on",
        delay_seconds="3600", http_method="POST", body_format="json",
        url_template="https://crm.example/hook",
        body_template='{"click": "{externalid}", "payout": {payout|0}, "site": "{var:site}"}',
        headers_template="Authorization: Bearer abc\nX-Status: {status}",
        success_mode="contains", success_pattern='"ok":true', timeout_seconds="15",
        max_attempts="5", retry_base_seconds="120", disable_after_failures="20",
    )  # fmt: skip
    response = admin_client.post(f"{RULES}add/", data)
    assert response.status_code == 302, page(response)
    rule = PostbackRule.objects.get()
    assert (rule.name, rule.event_type, rule.is_active, rule.trigger) == (
        "CRM webhook",
        "conversion",
        True,
        "changed",
    )
    assert rule.replaces_global and rule.first_only
    assert list(rule.campaigns.all()) == [campaign]
    assert list(rule.offers.all()) == [offer]
    assert list(rule.traffic_sources.all()) == [source]
    assert list(rule.affiliate_networks.all()) == [network]
    assert list(rule.rejection_reasons.all()) == [fraud]
    assert rule.statuses == ["rejected", "refunded"]
    assert rule.conversion_types == ["lead", "Sale"]
    assert (rule.delay_seconds, rule.http_method, rule.body_format) == (3600, "POST", "json")
    assert rule.body_template == data["body_template"]
    assert rule.headers_template == data["headers_template"]
    assert (rule.success_mode, rule.success_pattern) == ("contains", '"ok":true')
    assert (rule.timeout_seconds, rule.max_attempts, rule.retry_base_seconds) == (15, 5, 120)
    assert rule.disable_after_failures == 20

    form = page(admin_client.get(f"{RULES}{rule.pk}/change/"))
    assert 'value="lead, Sale"' in form
    assert 'value="refunded" checked' in form.replace(' id="id_statuses_3"', "")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("url_template", "https://ts.example/?c={externalid}&r={revnue}",
         "Unknown macro {revnue}; did you mean {revenue}?"),
        ("url_template", "https://ts.example/?c={externalId}&ct={conversion_type}",
         "Unknown macro {conversion_type}; did you mean {conversion.type}?"),
        ("url_template", "ftp://ts.example/?c={externalid}", "Enter an http:// or https:// URL."),
        ("body_template", '{"click": "{externalid}", "v": "{payuot}"}',
         "Unknown macro {payuot}; did you mean {payout}?"),
        ("headers_template", "X-Click: {clickid}\nX-Bad: {statsu}",
         "Line 2 (X-Bad): Unknown macro {statsu}; did you mean {status}?"),
    ],
)  # fmt: skip
def test_bad_templates_are_refused_with_the_nearest_macro(admin_client, field, value, message):
    data = form_data(http_method="POST", body_format="json", **{field: value})
    response = admin_client.post(f"{RULES}add/", data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in errors[field], errors
    assert message in page(response)
    assert not PostbackRule.objects.exists()


def test_success_pattern_is_required_by_its_mode(admin_client):
    response = admin_client.post(f"{RULES}add/", form_data(success_mode="regex"))
    assert "success_pattern" in response.context["adminform"].form.errors
    response = admin_client.post(
        f"{RULES}add/", form_data(success_mode="regex", success_pattern="(")
    )
    assert "success_pattern" in response.context["adminform"].form.errors
    assert not PostbackRule.objects.exists()


def test_warnings_do_not_block_and_show_after_saving(admin_client):
    data = form_data(url_template="https://ts.example/pb?p={payout}")
    response = admin_client.post(f"{RULES}add/", data, follow=True)
    assert PostbackRule.objects.count() == 1
    shown = [str(m) for m in response.context["messages"]]
    assert any("No {externalid} macro" in m for m in shown), shown


def test_unknown_custom_variable_of_the_chosen_sources_is_refused(admin_client):
    source = factories.traffic_source()  # defines {var:site}
    data = form_data(
        traffic_sources=[source.pk],
        url_template="https://ts.example/?c={externalid}&s={var:site}&w={var:widget}",
    )
    response = admin_client.post(f"{RULES}add/", data)
    errors = response.context["adminform"].form.errors["url_template"]
    assert any("{var:widget}" in e and "site" in e for e in errors), errors
    data["url_template"] = "https://ts.example/?c={externalid}&s={var:site}"
    assert admin_client.post(f"{RULES}add/", data).status_code == 302


def test_help_texts_are_escaped_once(admin_client):
    html = page(admin_client.get(f"{RULES}add/"))
    assert "&amp;currency={payout_currency}" in html
    assert "&currency=" not in html
    assert "&amp;amp;" not in html
    assert "/i/&lt;campaign key&gt;" in html  # the type's help text, not an HTML tag
    assert "e.g. 3600 = 1 h" in html


def test_form_has_the_fieldsets_macro_picker_and_preview_panel(admin_client):
    response = admin_client.get(f"{RULES}add/")
    html = page(response)
    for heading in ("Type &amp; status", "Scope", "Firing conditions", "Destination",
                    "Retries &amp; auto-disable"):  # fmt: skip
        assert f">{heading}</h2>" in html
    assert "Status: deactivated automatically" not in html
    catalogue = response.context["macro_catalogue"]
    names = {m["name"]: m for m in catalogue}
    assert names["externalid"]["recorded"] and not names["conversion.cost"]["recorded"]
    assert any(m.get("deprecated") for m in catalogue)
    assert 'id="pb-macro-catalogue"' in html and '"externalid"' in html
    assert 'id="pb-macro-picker"' in html and 'id="pb-preview"' in html
    assert f'data-preview-url="{PREVIEW}"' in html
    assert "postbacks/rule_form.js" in html and "postbacks/rule_form.css" in html
    assert 'id="pb-test-send"' in html  # unsaved form data can be tested too


def test_picker_lists_the_traffic_sources_custom_variables(admin_client):
    source = factories.traffic_source("MGID")
    response = admin_client.get(f"{RULES}add/")
    assert response.context["source_vars"][str(source.pk)] == {"name": "MGID", "vars": ["site"]}


def test_status_block_shows_why_a_rule_disabled_itself(admin_client):
    rule = factories.rule(
        "https://ts.example/?c={externalid}", is_active=False, needs_attention=True,
        disabled_reason="20 deliveries in a row failed (last: HTTP 500).",
        disabled_at=timezone.now(),
    )  # fmt: skip
    html = page(admin_client.get(f"{RULES}{rule.pk}/change/"))
    assert html.index("Status: deactivated automatically") < html.index(">Scope</h2>")
    assert "20 deliveries in a row failed (last: HTTP 500)." in html


# --- preview --------------------------------------------------------------------------


def test_preview_renders_sample_data(admin_client):
    data = form_data(
        http_method="POST", body_format="json",
        url_template="https://ts.example/pb?c={externalid}&r={payout}&cur={payout_currency}",
        body_template='{"click": "{externalid}", "payout": {payout|0}}',
        headers_template="X-Status: {status}",
    )  # fmt: skip
    response = admin_client.post(PREVIEW, data)
    assert response.status_code == 200
    answer = response.json()
    assert answer["errors"] == []
    assert answer["request"]["method"] == "POST"
    assert answer["request"]["url"] == "https://ts.example/pb?c=ts-click-123&r=2.5&cur=USD"
    assert json.loads(answer["request"]["body"]) == {"click": "ts-click-123", "payout": 2.5}
    assert answer["request"]["headers"]["X-Status"] == "approved"
    assert answer["conversion"].startswith("Sample values")


def test_preview_renders_a_chosen_conversion(admin_client, conversion):
    data = form_data(url_template="https://ts.example/?c={externalid}&r={payout}&t={txid}")
    for chosen in (str(conversion.pk), "TX-9"):
        answer = admin_client.post(PREVIEW, {**data, "_conversion": chosen}).json()
        assert answer["request"]["url"] == "https://ts.example/?c=ext-42&r=4.2&t=TX-9"
        assert answer["conversion"].startswith(f"Conversion #{conversion.pk}: sale, approved")


def test_preview_shows_template_errors_and_warnings(admin_client):
    data = form_data(url_template="https://ts.example/?r={revnue}")
    answer = admin_client.post(PREVIEW, data).json()
    assert "Postback URL: Unknown macro {revnue}; did you mean {revenue}?" in answer["errors"]
    assert len(answer["errors"]) == len(set(answer["errors"]))
    assert answer["request"]["url"] == "https://ts.example/?r={revnue}"  # as typed

    answer = admin_client.post(PREVIEW, form_data(url_template="https://ts.example/")).json()
    assert answer["errors"] == []
    assert answer["warnings"] == [
        "No {externalid} macro: the traffic source cannot match the conversion to its click."
    ]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "carrier-pigeon", "http_method": "PUT", "url_template": "{{{"},
        form_data(timeout_seconds="soon", max_attempts="-4", delay_seconds="9" * 30,
                  statuses=["nope"], traffic_sources=["x"], campaigns=["999999"]),
        form_data(url_template="http://[::1", body_format="json", http_method="POST",
                  body_template='{"a": {payout', headers_template="no colon\n:\x00"),
        form_data(url_template="x" * 50000, event_type="\x00", name="\x00" * 300),
    ],
)  # fmt: skip
def test_preview_answers_json_errors_for_garbage(admin_client, data):
    response = admin_client.post(PREVIEW, data)
    assert response.status_code == 200
    answer = response.json()
    assert answer["errors"]
    assert set(answer) >= {"request", "errors", "warnings"}


def test_preview_refuses_an_unknown_conversion_and_get(admin_client):
    response = admin_client.post(PREVIEW, form_data(_conversion="12345678901234567890123"))
    assert response.status_code == 400
    assert "No conversion with ID or transaction ID" in response.json()["errors"][0]
    assert admin_client.get(PREVIEW).status_code == 405


def test_preview_and_test_need_the_permission(viewer):
    rule = factories.rule("https://ts.example/?c={externalid}")
    assert viewer.post(PREVIEW, form_data()).status_code == 403
    assert viewer.post(f"{RULES}{rule.pk}/test/", form_data()).status_code == 403
    assert viewer.post(f"{RULES}test/", form_data()).status_code == 403
    assert not Delivery.objects.exists()


def test_preview_and_test_need_a_login(client):
    response = client.post(PREVIEW, form_data())
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- test button ------------------------------------------------------------------------


def test_send_test_to_a_real_receiver(admin_client, receiver, conversion):
    receiver.script(Reply(200, body='{"ok":true}'))
    rule = factories.rule(f"{receiver.url}/old?c={{externalid}}", name="Source")
    data = form_data(
        name="Source", url_template=f"{receiver.url}/pb?c={{externalid}}&p={{payout}}",
        _conversion=str(conversion.pk),
    )  # fmt: skip
    response = admin_client.post(f"{RULES}{rule.pk}/test/", data)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["response"]["status_code"] == 200
    assert answer["response"]["body"] == '{"ok":true}'
    assert answer["response"]["outcome"] == "delivered"
    assert answer["request"]["url"] == f"{receiver.url}/pb?c=ext-42&p=4.2"
    [got] = receiver.received
    assert got.query == {"c": "ext-42", "p": "4.2"}  # the form's unsaved URL
    delivery = Delivery.objects.get()
    assert delivery.is_test and delivery.rule == rule and delivery.status == "delivered"
    assert answer["delivery_url"] == f"/admin/postbacks/delivery/{delivery.pk}/change/"
    attempt = Attempt.objects.get(delivery=delivery)
    assert (attempt.status_code, attempt.outcome) == (200, "delivered")
    rule.refresh_from_db()
    assert rule.url_template.endswith("/old?c={externalid}")  # nothing saved


def test_send_test_of_a_saved_rule_reports_a_failure(admin_client, receiver):
    receiver.script(Reply(500, body="boom"))
    rule = factories.rule(f"{receiver.url}/pb?c={{externalid}}")
    answer = admin_client.post(f"{RULES}{rule.pk}/test/").json()
    assert answer["response"]["status_code"] == 500
    assert answer["response"]["body"] == "boom"
    assert answer["response"]["outcome"] == "failed"
    assert "HTTP 500" in answer["response"]["error"]
    assert Delivery.objects.get().status == "failed"
    assert len(receiver.received) == 1  # a test is never retried


def test_send_test_from_the_add_form(admin_client, receiver):
    data = form_data(url_template=f"{receiver.url}/pb?c={{externalid}}")
    answer = admin_client.post(f"{RULES}test/", data).json()
    assert answer["response"]["status_code"] == 200
    assert Delivery.objects.get().rule is None
    assert not PostbackRule.objects.exists()


def test_send_test_refuses_a_form_with_errors(admin_client, receiver):
    rule = factories.rule(f"{receiver.url}/pb?c={{externalid}}")
    data = form_data(url_template=f"{receiver.url}/pb?c={{externalidd}}")
    response = admin_client.post(f"{RULES}{rule.pk}/test/", data)
    assert response.status_code == 400
    assert any("did you mean {externalid}" in e for e in response.json()["errors"])
    assert receiver.received == [] and not Delivery.objects.exists()


def test_change_form_has_a_test_button_only_with_change_permission(admin_client, viewer):
    rule = factories.rule("https://ts.example/?c={externalid}")
    url = f"{RULES}{rule.pk}/change/"
    assert f'data-test-url="{RULES}{rule.pk}/test/"' in page(admin_client.get(url))
    html = page(viewer.get(url))
    assert 'id="pb-test-send"' not in html and 'name="_save"' not in html
    assert 'id="pb-preview"' not in html and 'id="pb-macro-picker"' not in html


# --- list, actions, delete ------------------------------------------------------------


def test_disable_asks_first_then_cancels_waiting_deliveries(admin_client):
    rule = factories.rule("https://ts.example/?c={externalid}")
    other = factories.rule("https://other.example/?c={externalid}", name="Other")
    waiting(rule, 2)
    sent = factories.delivery("https://ts.example/pb", rule=rule, status="delivered")
    untouched = waiting(other, 1)[0]
    selected = {"action": "disable", "_selected_action": [rule.pk]}

    confirm = admin_client.post(RULES, selected)
    assert confirm.status_code == 200
    assert "2 scheduled deliveries will be cancelled." in page(confirm)
    rule.refresh_from_db()
    assert rule.is_active

    done = admin_client.post(RULES, {**selected, "post": "yes"}, follow=True)
    assert "1 rule disabled, 2 scheduled deliveries cancelled." in page(done)
    rule.refresh_from_db()
    assert not rule.is_active
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert sorted(statuses.values()) == ["cancelled", "cancelled", "delivered", "scheduled"]
    assert statuses[sent.pk] == "delivered" and statuses[untouched.pk] == "scheduled"


def test_unticking_active_in_the_form_cancels_waiting_deliveries(admin_client):
    rule = factories.rule("https://ts.example/pb?c={externalid}&r={payout}", name="Taboola")
    waiting(rule, 3)
    data = form_data(name="Taboola", is_active=None)
    response = admin_client.post(f"{RULES}{rule.pk}/change/", data, follow=True)
    assert "Rule deactivated: 3 scheduled deliveries cancelled." in page(response)
    rule.refresh_from_db()
    assert not rule.is_active
    assert set(Delivery.objects.values_list("status", flat=True)) == {"cancelled"}


def test_delete_says_how_many_deliveries_are_cancelled_then_cancels_them(admin_client):
    rule = factories.rule("https://ts.example/?c={externalid}")
    waiting(rule, 2)
    url = f"{RULES}{rule.pk}/delete/"
    assert "2 scheduled deliveries of this rule will be cancelled." in page(admin_client.get(url))
    response = admin_client.post(url, {"post": "yes"}, follow=True)
    assert "2 scheduled deliveries cancelled." in page(response)
    assert not PostbackRule.objects.exists()
    assert list(Delivery.objects.values_list("status", "rule")) == [("cancelled", None)] * 2


def test_bulk_delete_says_how_many_deliveries_are_cancelled(admin_client):
    first = factories.rule("https://ts.example/?c={externalid}")
    second = factories.rule("https://ts.example/?c={externalid}", name="Second")
    waiting(first, 1)
    waiting(second, 2)
    selected = {"action": "delete_selected", "_selected_action": [first.pk, second.pk]}
    confirm = admin_client.post(RULES, selected)
    assert "3 scheduled deliveries of these rules will be cancelled." in page(confirm)
    admin_client.post(RULES, {**selected, "post": "yes"})
    assert not PostbackRule.objects.exists()
    assert set(Delivery.objects.values_list("status", flat=True)) == {"cancelled"}


def test_banner_lists_auto_disabled_rules_until_acknowledged(admin_client):
    rule = factories.rule(
        "https://ts.example/?c={externalid}", name="Gone source", is_active=False,
        needs_attention=True, disabled_at=timezone.now(),
        disabled_reason="The destination answered 410 Gone.",
    )  # fmt: skip
    html = page(admin_client.get(RULES))
    assert 'id="pb-attention"' in html
    assert "The destination answered 410 Gone." in html
    assert "needs attention" in html

    response = admin_client.post(
        RULES, {"action": "acknowledge", "_selected_action": [rule.pk]}, follow=True
    )
    assert "1 rule acknowledged." in page(response)
    assert 'id="pb-attention"' not in page(admin_client.get(RULES))
    rule.refresh_from_db()
    assert not rule.needs_attention and not rule.is_active


def test_enable_switches_rules_back_on_and_clears_the_flag(admin_client):
    rule = factories.rule(
        "https://ts.example/?c={externalid}", is_active=False, needs_attention=True,
        consecutive_failures=20, disabled_at=timezone.now(), disabled_reason="HTTP 500",
    )  # fmt: skip
    admin_client.post(RULES, {"action": "enable", "_selected_action": [rule.pk]})
    rule.refresh_from_db()
    assert rule.is_active and not rule.needs_attention and rule.consecutive_failures == 0


def test_list_columns_and_filters_offer_only_what_exists(admin_client):
    factories.rule(
        "https://trc.taboola.com/s2s?c={externalid}", name="Taboola", delay_seconds=5400,
        statuses=["approved"], trigger="created",
    )  # fmt: skip
    response = admin_client.get(RULES)
    html = page(response)
    assert "trc.taboola.com" in html and "1 h 30 min" in html and "on create" in html
    filters = {spec.title: spec for spec in response.context["cl"].filter_specs}
    assert "type" not in filters  # one type only: nothing to filter
    assert [choice[0] for choice in filters["state"].lookup_choices] == ["active"]

    factories.rule("https://mgid.example/?c={externalid}", name="MGID clicks", event_type="click")
    filters = {spec.title: spec for spec in admin_client.get(RULES).context["cl"].filter_specs}
    assert [value for value, _ in filters["type"].lookup_choices] == ["click", "conversion"]
    filtered = admin_client.get(f"{RULES}?event_type=click")
    assert [r.name for r in filtered.context["cl"].result_list] == ["MGID clicks"]


def test_staff_without_change_permission_sees_the_list_without_actions(viewer):
    rule = factories.rule(
        "https://ts.example/?c={externalid}", is_active=False, needs_attention=True,
        disabled_at=timezone.now(), disabled_reason="HTTP 410",
    )  # fmt: skip
    response = viewer.get(RULES)
    assert response.status_code == 200
    html = page(response)
    assert "HTTP 410" in html and 'value="acknowledge"' not in html
    viewer.post(RULES, {"action": "acknowledge", "_selected_action": [rule.pk]})
    viewer.post(RULES, {"action": "disable", "_selected_action": [rule.pk], "post": "yes"})
    rule.refresh_from_db()
    assert rule.needs_attention
    assert viewer.post(f"{RULES}add/", form_data()).status_code == 403
