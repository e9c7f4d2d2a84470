"""A template error in the rule form is said once, without a second, wrong sentence about
the value the form did not take (issue 17, defect 10)."""

from __future__ import annotations

import pytest

from tests import factories
from tests.postbacks.test_rule_admin import RULES, form_data

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("url_template", "https://ts.example/?c={extrenalid}",
         "Unknown macro {extrenalid}; did you mean {externalid}?"),
        ("body_template", '{"click": "{externalid}", "v": "{payuot}"}',
         "Unknown macro {payuot}; did you mean {payout}?"),
        ("headers_template", "X-Bad: {statsu}",
         "Line 1 (X-Bad): Unknown macro {statsu}; did you mean {status}?"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("saved", [False, True])
def test_a_template_error_is_the_only_message_of_its_field(
    admin_client, field, value, message, saved
):
    url = f"{RULES}add/"
    if saved:
        rule = factories.rule("https://ts.example/old?c={externalid}&t={bad}")
        url = f"{RULES}{rule.pk}/change/"
    data = form_data(http_method="POST", body_format="json", **{field: value})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors[field] == [message], errors
