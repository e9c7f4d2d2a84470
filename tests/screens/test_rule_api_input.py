"""Rule API input that used to end in a 500 (issue 17, defect 5)."""

from __future__ import annotations

import pytest

from tests import factories

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded", "json"])
def test_a_null_event_names_is_a_400_in_every_encoding(api, encoding):
    rule = factories.rule("https://ts.example/pb?c={externalid}")
    url = f"/api/v1/postback-rules/{rule.pk}/"
    if encoding == "json":
        answer = api.patch(url, {"event_names": None}, format="json")
    elif encoding == "multipart":
        answer = api.patch(url, {"event_names": "null"}, format="multipart")
    else:
        answer = api.patch(
            url, "event_names=null", content_type="application/x-www-form-urlencoded"
        )
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"] == "invalid" and "event_names" in answer.json()["detail"]
    rule.refresh_from_db()
    assert rule.event_names == {}
