"""Operations that answer whole deliveries (URL, headers, body) need the permission to read
them: ``view_delivery`` (issue 17, defect 4)."""

from __future__ import annotations

import pytest

from postbacks.models import Delivery
from tests import factories

pytestmark = pytest.mark.django_db
DELIVERIES = "/api/v1/deliveries/"


def test_replay_and_cancel_of_one_need_view_delivery(api_for):
    failed = factories.delivery("https://ts.example/pb?c=1", status=Delivery.Status.FAILED)
    waiting = factories.delivery("https://ts.example/pb?c=2")
    blind = api_for("change_delivery")
    assert blind.get(DELIVERIES).status_code == 403
    for delivery, operation in ((failed, "replay"), (waiting, "cancel")):
        answer = blind.post(f"{DELIVERIES}{delivery.pk}/{operation}/")
        assert answer.status_code == 403, answer.content
        assert "url" not in answer.json()
    assert Delivery.objects.get(pk=failed.pk).status == Delivery.Status.FAILED
    assert Delivery.objects.get(pk=waiting.pk).status == Delivery.Status.SCHEDULED
    # The bulk operations answer ids only: the change permission is enough.
    answer = blind.post(f"{DELIVERIES}replay/", {"ids": [failed.pk]}, format="json")
    assert answer.status_code == 200 and answer.json()["done"] == 1


def test_a_test_send_needs_view_delivery(api_for, receiver):
    rule = factories.rule(f"{receiver.url}/pb?c={{externalid}}")
    editor = api_for("view_postbackrule", "change_postbackrule")
    assert editor.get(DELIVERIES).status_code == 403
    answer = editor.post(f"/api/v1/postback-rules/{rule.pk}/test/", {}, format="json")
    assert answer.status_code == 403, answer.content
    assert "delivery" not in answer.json()
    assert receiver.received == [] and not Delivery.objects.exists()
