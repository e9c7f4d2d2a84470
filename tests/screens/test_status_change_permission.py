"""A conversion's status changes only with ``tracker.change_conversion``, whatever the door:
``POST conversions/{id}/status/``, a repeat through ``POST conversions/``, the admin's add
form, an upload row (issue 17, defect 1)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests import factories
from tracker.models import Conversion, ConversionStatusChange, ConversionUpload, InboundRequest

pytestmark = pytest.mark.django_db
ADD_VIEW = ("add_conversion", "view_conversion")


@pytest.fixture
def conversion(api) -> Conversion:
    click = factories.click()
    answer = api.post(
        "/api/v1/conversions/", {"click_id": str(click.pk), "txid": "T-1"}, format="json"
    )
    assert answer.status_code == 201, answer.content
    return Conversion.objects.get()


def test_the_status_action_needs_the_change_permission(api_for, conversion):
    client = api_for(*ADD_VIEW)
    answer = client.post(
        f"/api/v1/conversions/{conversion.pk}/status/", {"status": "rejected"}, format="json"
    )
    assert answer.status_code == 403


def test_a_repeat_through_create_cannot_change_the_status_without_it(api_for, conversion):
    client = api_for(*ADD_VIEW)
    body = {"click_id": str(conversion.click_id), "txid": "T-1", "status": "rejected"}
    answer = client.post("/api/v1/conversions/", body, format="json")
    assert answer.status_code == 403, answer.content
    assert answer.json()["error"] == "permission_denied"
    assert "tracker.change_conversion" in answer.json()["detail"]
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.APPROVED
    assert not ConversionStatusChange.objects.exists()
    log = InboundRequest.objects.order_by("-id").first()
    assert log.response_status == 403 and log.error_code == "permission_denied"
    assert log.outcome == InboundRequest.Outcome.FORBIDDEN


def test_new_conversions_and_duplicates_still_need_only_add(api_for, conversion):
    client = api_for(*ADD_VIEW)
    click = conversion.click
    again = client.post(
        "/api/v1/conversions/", {"click_id": str(click.pk), "txid": "T-1"}, format="json"
    )
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    new = {"click_id": str(click.pk), "txid": "T-2", "status": "rejected"}
    assert client.post("/api/v1/conversions/", new, format="json").status_code == 201


def test_with_the_change_permission_a_repeat_changes_the_status(api_for, conversion):
    client = api_for(*ADD_VIEW, "change_conversion")
    body = {"click_id": str(conversion.click_id), "txid": "T-1", "status": "rejected"}
    answer = client.post("/api/v1/conversions/", body, format="json")
    assert answer.status_code == 200 and answer.json()["status"] == "status_changed"


def test_an_upload_row_cannot_change_the_status_without_it(api_for, conversion):
    client = api_for(*ADD_VIEW, "add_conversionupload", "view_conversionupload")
    row = {"click_id": str(conversion.click_id), "txid": "T-1", "status": "rejected"}
    answer = client.post(
        "/api/v1/conversion-uploads/", {"rows": [row], "wait": True}, format="json"
    )
    assert answer.status_code == 403, answer.content
    assert answer.json()["error"] == "permission_denied" and "Row(s) 2" in answer.json()["detail"]
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.APPROVED
    assert not ConversionUpload.objects.exists()


def test_the_admin_add_form_and_upload_refuse_a_status_change_without_it(staff_with, conversion):
    client = staff_with(*ADD_VIEW, "add_conversionupload", "view_conversionupload")
    form = {"click_id": str(conversion.click_id), "txid": "T-1", "status": "rejected"}
    page = client.post("/admin/tracker/conversion/add/", form)
    assert page.status_code == 200
    assert "tracker.change_conversion" in page.content.decode()
    csv = f"click_id,txid,status\n{conversion.click_id},T-1,rejected\n".encode()
    upload = client.post(
        "/admin/tracker/conversionupload/add/", {"file": SimpleUploadedFile("c.csv", csv)}
    )
    assert upload.status_code == 200 and "tracker.change_conversion" in upload.content.decode()
    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.APPROVED
    assert not ConversionUpload.objects.exists()
