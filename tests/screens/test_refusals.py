"""Refusals in the documented shapes, kept in the inbound log (issue 17, defect 9): the
pixel always answers its GIF, the script its JavaScript, /i/ and the API their JSON."""

from __future__ import annotations

import pytest
from django.test import Client

from tests import factories
from tracker.models import InboundRequest

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser() -> Client:
    """A client that checks CSRF tokens, as Django does for real requests."""
    return Client(enforce_csrf_checks=True)


def test_a_post_to_the_pixel_gets_the_gif_and_is_logged(browser):
    answer = browser.post("/cv.gif", {"click_id": "x"})
    assert answer.status_code == 200 and answer["Content-Type"] == "image/gif"
    log = InboundRequest.objects.get()
    assert (log.response_status, log.error_code) == (405, "method_not_allowed")


def test_a_put_to_the_script_gets_javascript_and_is_logged(browser):
    answer = browser.put("/cv.js", "click_id=x")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/javascript")
    assert b"method_not_allowed" in answer.content
    assert InboundRequest.objects.get().error_code == "method_not_allowed"


def test_a_post_to_the_impression_pixel_is_a_json_405(browser):
    campaign = factories.campaign()
    answer = browser.post(f"/i/{campaign.key}")
    assert answer.status_code == 405
    assert answer.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE"])
def test_a_form_in_another_charset_is_a_json_400_and_logged(browser, charset):
    click = factories.click()
    answer = browser.generic(
        "POST",
        "/cv",
        f"click_id={click.pk}".encode("utf-16"),
        content_type=f"application/x-www-form-urlencoded; charset={charset}",
    )
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == "invalid_body"
    log = InboundRequest.objects.get()
    assert (log.response_status, log.error_code) == (400, "invalid_body")


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_an_unknown_api_path_is_a_json_404(api, method):
    for path in ("/api/v1/nothing/", "/api/v1/nothing", "/api/v1/offers/1/nothing/"):
        answer = getattr(api, method)(path)
        assert answer.status_code == 404, (path, answer.content)
        assert answer.json()["error"] == "not_found", path


def test_a_known_api_path_without_its_slash_is_still_redirected(api):
    answer = api.get("/api/v1/offers?name=x")
    assert answer.status_code == 301 and answer["Location"] == "/api/v1/offers/?name=x"
