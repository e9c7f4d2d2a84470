"""A test sent from a rule form before saving is logged as a test of an unsaved rule, not
of a deleted one (issue 17, defect 12)."""

from __future__ import annotations

import pytest

from postbacks.models import Delivery
from postbacks.receiver import Reply
from tests.postbacks.test_rule_admin import RULES, form_data

pytestmark = pytest.mark.django_db


def test_the_log_names_an_unsaved_rule_as_such(admin_client, receiver):
    receiver.script(Reply(200))
    data = form_data(name="Draft", url_template=f"{receiver.url}/pb?c={{externalid}}")
    answer = admin_client.post(f"{RULES}test/", data)
    assert answer.status_code == 200, answer.content
    delivery = Delivery.objects.get()
    assert delivery.rule is None and delivery.is_test
    log = admin_client.get("/admin/postbacks/attempt/").content.decode()
    assert "(unsaved rule)" in log and "(deleted rule)" not in log
    assert "Draft" in delivery.event_detail
