"""``/crm/<id>/status``: a ``webhook-id`` reused with another body is a 409, not the first
call's cached answer (issue 17, defect 13)."""

from __future__ import annotations

import pytest

from tests.tracker.test_crm_sync import (  # noqa: F401 -- fixtures
    conversion,
    crm_rule,
    logged,
    post,
    refused,
    source,
)
from tracker.models import Conversion, ConversionStatusChange

pytestmark = pytest.mark.django_db


def test_the_same_webhook_id_with_another_body_is_409(client, crm_rule, conversion):  # noqa: F811
    first = post(
        client, crm_rule.pk, {"conversion_id": conversion.pk, "status": "approved"}, msg_id="m-1"
    )
    assert first.status_code == 200 and first.json()["changed"] is True
    other = {"conversion_id": conversion.pk, "status": "rejected", "rejection_reason": "fraud"}
    answer = post(client, crm_rule.pk, other, msg_id="m-1")
    body = refused(answer, 409, "webhook_id_reused")
    assert f"#{logged().pk - 1}" in body["detail"]
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.APPROVED
    assert ConversionStatusChange.objects.count() == 1
    # The same body again is still the retry it was.
    again = post(
        client, crm_rule.pk, {"conversion_id": conversion.pk, "status": "approved"}, msg_id="m-1"
    )
    assert again.status_code == 200 and again.json() == first.json()
