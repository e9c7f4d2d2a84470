"""``GET /api/v1/conversions/google-ads/``: the Google Ads upload file of a period through the
API, exactly as ``manage.py export_google_ads`` writes it (rows built as in
tests/tracker/test_google_ads.py), its refusals and its permission."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.presets import source_from_preset
from tests import factories
from tests.tracker.test_google_ads import GCLID, HEADER, convert
from tracker.models import Conversion

pytestmark = pytest.mark.django_db
URL = "/api/v1/conversions/google-ads/"
PERIOD = {"since": "2026-01-01", "until": "2026-02-01"}


@pytest.fixture
def google_campaign():
    source, _rule = source_from_preset("google_ads", create_rule=False)
    return factories.campaign(source, name="Search")


@pytest.fixture
def january(google_campaign):
    """Conversions of a Google Ads campaign: two exported from January (a sale and a lead),
    the others left out (pending, test, no gclid, received before or after the period)."""
    convert(
        google_campaign,
        payout=Decimal("2.350000"),
        currency="USD",
        conversion_type="sale",
        converted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    convert(
        google_campaign,
        "EAIaIQobChMI_lead",
        payout=Decimal("0.5"),
        currency="EUR",
        conversion_type="lead",
        received=datetime(2026, 1, 31, 22, 59, 59, tzinfo=UTC),  # 23:59:59 in Berlin
    )
    convert(google_campaign, "EAIaIQobChMI_pending", status=Conversion.Status.PENDING)
    convert(google_campaign, is_test=True)
    convert(google_campaign, "")
    convert(google_campaign, "EAIaIQobChMI_before", received=datetime(2025, 12, 31, 22, tzinfo=UTC))
    convert(google_campaign, "EAIaIQobChMI_after", received=datetime(2026, 1, 31, 23, tzinfo=UTC))
    return google_campaign


def body(answer) -> str:
    assert answer.status_code == 200, answer.content
    return b"".join(answer.streaming_content).decode()


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("export_google_ads", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_upload_file_of_a_period(api, january):
    answer = api.get(
        URL,
        {**PERIOD, "conversion_name": ["sale=Purchase", "Lead"], "time_zone": "Europe/Berlin"},
    )
    assert answer.streaming
    assert answer["Content-Type"] == "text/csv; charset=utf-8"
    disposition = 'attachment; filename="google-ads-20260101-20260201.csv"'
    assert answer["Content-Disposition"] == disposition
    assert "X-Exported-Count" not in answer and "X-Skipped-Count" not in answer
    text = body(answer)
    assert text == (
        "Parameters:TimeZone=Europe/Berlin\r\n"
        + HEADER
        + f"{GCLID},Purchase,2026-01-02 04:04:05,2.35,USD\r\n"
        + "EAIaIQobChMI_lead,Lead,2026-01-31 23:59:59,0.5,EUR\r\n"
    )
    # As the README's curl line writes it: "=" inside a value, unencoded.
    readme = (
        f"{URL}?since=2026-01-01&until=2026-02-01&conversion_name=sale=Purchase"
        "&conversion_name=Lead&time_zone=Europe/Berlin"
    )
    assert body(api.get(readme)) == text


def test_statuses_offset_time_zone_and_filters(api, january):
    source, _rule = source_from_preset("google_ads", name="Google 2", create_rule=False)
    other = factories.campaign(source, name="Other")
    convert(other, "EAIaIQobChMI_other", received=datetime(2026, 1, 10, tzinfo=UTC))
    answer = api.get(
        URL,
        {
            "since": "2026-01-01T00:00:00+00:00",
            "until": "2026-01-31T00:00",
            "conversion_name": "Purchase",
            "time_zone": "+0530",
            "status": ["approved", "pending"],
            "campaign": january.pk,
        },
    )
    assert answer["Content-Disposition"] == (
        'attachment; filename="google-ads-20260101-053000-20260131.csv"'
    )
    assert body(answer) == (
        "Parameters:TimeZone=+0530\r\n"
        + HEADER
        + f"{GCLID},Purchase,2026-01-02 08:34:05,2.35,USD\r\n"
        + "EAIaIQobChMI_pending,Purchase,2026-01-02 08:34:05,0,USD\r\n"
    )
    assert "EAIaIQobChMI_other" in body(
        api.get(URL, {"since": "2026-01-01", "conversion_name": "Purchase", "campaign": other.pk})
    )


def test_until_defaults_to_now_and_text_csv_is_acceptable(api, google_campaign):
    recent = timezone.now() - timedelta(minutes=5)
    convert(google_campaign, payout=Decimal("3"), received=recent)
    since = (recent - timedelta(minutes=1)).isoformat()
    answer = api.get(URL, {"since": since, "conversion_name": "Purchase"}, HTTP_ACCEPT="text/csv")
    lines = body(answer).splitlines()
    assert lines[0] == "Parameters:TimeZone=+0000"
    assert lines[2] == f"{GCLID},Purchase,{recent:%Y-%m-%d %H:%M:%S},3,USD"
    refused = api.get(URL, {"since": since, "conversion_name": "P"}, HTTP_ACCEPT="application/xml")
    assert refused.status_code == 406 and refused.json()["error"] == "not_acceptable"


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "2026-01-01", "--until", "2026-02-01", "--conversion-name", "sale=Purchase",
         "--conversion-name", "Lead", "--time-zone", "Europe/Berlin"],
        ["--since", "2026-01-02T00:00", "--until", "2026-02-01T00:00:00+01:00",
         "--conversion-name", "lead=Lead", "--time-zone", "America/New_York",
         "--status", "approved", "--status", "pending"],
        ["--since", "2025-12-31", "--conversion-name", "Purchase", "--time-zone", "UTC"],
    ],
)  # fmt: skip
def test_the_same_file_as_the_command(api, january, args):
    params: dict[str, list[str]] = {}
    for option, value in zip(args[::2], args[1::2], strict=True):
        params.setdefault(option.removeprefix("--").replace("-", "_"), []).append(value)
    assert body(api.get(URL, params)) == run_command(*args)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"time_zone": "Mars/Base"}, {"time_zone": "Unknown time zone 'Mars/Base': give a time "
         "zone ID such as Europe/Berlin or a GMT offset such as +0000."}),
        ({"time_zone": "America"}, {"time_zone": "Unknown time zone 'America': give a time zone "
         "ID such as Europe/Berlin or a GMT offset such as +0000."}),
        ({"time_zone": "+2400"}, {"time_zone": "Unknown time zone '+2400': give a time zone ID "
         "such as Europe/Berlin or a GMT offset such as +0000."}),
        ({"since": "yesterday"},
         {"since": "since: 'yesterday' is not a date (2026-01-01) or ISO time."}),
        ({"since": ""}, {"since": "since is required: a date (2026-01-01) or ISO time."}),
        ({"since": "0001-01-01", "time_zone": "Europe/Berlin"},
         {"since": "since: '0001-01-01' is outside years 1 to 9999 in UTC."}),
        ({"until": "2026-13-01"},
         {"until": "until: '2026-13-01' is not a date (2026-01-01) or ISO time."}),
        ({"until": "2026-01-01"}, {"until": "until must be after since."}),
        ({"since": "2026-01-02", "until": "2026-01-01T23:59:59"},
         {"until": "until must be after since."}),
        ({"conversion_name": ""}, {"conversion_name": "conversion_name is required: the Google "
         "Ads conversion action name (Purchase), or type=Name for one conversion type "
         "(sale=Purchase)."}),
        ({"conversion_name": "sale="}, {"conversion_name": "conversion_name: 'sale=': write "
         "type=Name (e.g. sale=Purchase) or a name."}),
        ({"conversion_name": ["A", "B"]},
         {"conversion_name": "conversion_name: The conversion name for '*' is given twice."}),
        ({"status": ["approved", "chargeback"]},
         {"status": "Unknown status 'chargeback': use approved, pending, rejected, refunded."}),
        ({"campaign": "x"}, {"campaign": "Enter a number."}),
        ({"click_id": "x"}, {"click_id": "Enter a valid UUID."}),
    ],
)  # fmt: skip
def test_refusals_name_the_parameter(api, params, detail):
    query = {"since": "2026-01-01", "conversion_name": "Purchase", **params}
    for accept in ("application/json", "text/csv"):
        answer = api.get(URL, query, HTTP_ACCEPT=accept)
        assert answer.status_code == 400, answer.content
        assert answer["Content-Type"] == "application/json"
        assert answer.json() == {
            "error": "invalid",
            "detail": {key: [message] for key, message in detail.items()},
        }


def test_every_bad_parameter_at_once(api):
    answer = api.get(URL, {"since": "x", "until": "y", "status": "z"})
    assert answer.status_code == 400
    assert set(answer.json()["detail"]) == {"since", "until", "conversion_name", "status"}


def test_permission_is_view_conversion(api_for, january):
    query = {**PERIOD, "conversion_name": "Purchase"}
    anonymous = APIClient().get(URL, query)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "not_authenticated"
    refused = api_for("view_click", "add_conversion", "change_conversion").get(URL, query)
    assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"
    allowed = api_for("view_conversion").get(URL, query)
    assert body(allowed).startswith("Parameters:TimeZone=+0000\r\n" + HEADER)
