"""One way to cancel (``DeliveryQuerySet.cancel``): only waiting deliveries, and every
cancel records who or what and why, shown in the delivery's trace."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from postbacks.models import Delivery
from tests import factories
from tests.api.conftest import client_with, make_token

pytestmark = pytest.mark.django_db


def test_cancel_touches_only_waiting_deliveries_and_says_why():
    waiting = factories.delivery("https://ts.example/a", due_in=3600)
    sending = factories.delivery("https://ts.example/b", status=Delivery.Status.SENDING)
    delivered = factories.delivery("https://ts.example/c", status=Delivery.Status.DELIVERED)

    assert Delivery.objects.all().cancel("the offer was paused.", by="alice (admin)") == 1
    for row in (waiting, sending, delivered):
        row.refresh_from_db()
    assert waiting.status == "cancelled"
    assert waiting.last_error == "Cancelled by alice (admin): the offer was paused."
    assert (sending.status, delivered.status) == ("sending", "delivered")
    assert sending.last_error == delivered.last_error == ""

    other = factories.delivery("https://ts.example/d", due_in=60)
    assert Delivery.objects.filter(pk=other.pk).cancel("the rule was deactivated.") == 1
    other.refresh_from_db()
    assert other.last_error == "Cancelled: the rule was deactivated."


def test_a_cancel_in_the_admin_records_the_user_and_the_trace_shows_it(admin_client):
    delivery = factories.delivery("https://ts.example/a", due_in=3600)
    page = admin_client.post(
        "/admin/postbacks/delivery/",
        {"action": "cancel", "_selected_action": [delivery.pk]},
        follow=True,
    )
    assert b"1 delivery cancelled." in page.content
    delivery.refresh_from_db()
    expected = "Cancelled by admin (admin): no further attempt will be made."
    assert (delivery.status, delivery.last_error) == ("cancelled", expected)
    trace = admin_client.get(f"/admin/postbacks/delivery/{delivery.pk}/change/")
    assert expected in trace.content.decode()


def test_a_cancel_through_the_api_records_the_user():
    delivery = factories.delivery("https://ts.example/a", due_in=3600)
    api = client_with(make_token("change_delivery", "view_delivery")[1])
    user = get_user_model().objects.get().get_username()

    answer = api.post(f"/api/v1/deliveries/{delivery.pk}/cancel/")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    delivery.refresh_from_db()
    assert delivery.last_error == f"Cancelled by {user} (API): no further attempt will be made."


def test_disabling_a_rule_in_the_admin_records_who(admin_client):
    rule = factories.rule("https://ts.example/pb?c={externalid}", delay_seconds=3600)
    delivery = factories.delivery("https://ts.example/pb?c=1", due_in=3600, rule=rule)
    page = admin_client.post(
        "/admin/postbacks/postbackrule/",
        {"action": "disable", "_selected_action": [rule.pk], "post": "yes"},
        follow=True,
    )
    assert b"1 rule disabled" in page.content
    delivery.refresh_from_db()
    assert delivery.status == "cancelled"
    assert delivery.last_error == "Cancelled by admin (admin): the rule was disabled."
