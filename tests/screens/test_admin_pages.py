"""Admin pages that answered 500 (issue 17, defects 6 and 7)."""

from __future__ import annotations

import pytest

from campaigns.models import Lander
from postbacks.models import Attempt
from tests import factories
from tracker.models import InboundRequest

pytestmark = pytest.mark.django_db


def test_view_only_staff_open_campaign_and_lander_pages(staff_with):
    lander = Lander.objects.create(name="Lander", url="https://lp.example/?cid={click_id}")
    campaign = factories.campaign()
    campaign.lander = lander
    campaign.save()
    viewer = staff_with("view_campaign", "view_lander")
    page = viewer.get(f"/admin/campaigns/campaign/{campaign.pk}/change/")
    assert page.status_code == 200 and "Lander" in page.content.decode()
    page = viewer.get(f"/admin/campaigns/lander/{lander.pk}/change/")
    assert page.status_code == 200 and "lp.example" in page.content.decode()


def test_the_history_of_log_rows_opens(admin_client, client):
    delivery = factories.delivery("https://ts.example/pb?c=1")
    attempt = Attempt.objects.create(
        delivery=delivery, number=1, started_at=delivery.created_at, method="GET",
        url=delivery.url, outcome="delivered", status_code=200, duration_ms=5,
    )  # fmt: skip
    client.get("/cv?click_id=nope")
    inbound = InboundRequest.objects.get()
    for path in (
        f"/admin/postbacks/delivery/{delivery.pk}/history/",
        f"/admin/postbacks/attempt/{attempt.pk}/history/",
        f"/admin/tracker/inboundrequest/{inbound.pk}/history/",
    ):
        page = admin_client.get(path)
        assert page.status_code == 200, path
        assert "history" in page.content.decode().lower()
