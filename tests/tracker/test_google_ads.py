"""Google Ads click-conversion export: the exact upload file from real rows, which
conversions are left out and why, the management command and the admin action."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command

from campaigns.models import TrafficSourceParameter
from campaigns.presets import source_from_preset
from tests import factories
from tracker import google_ads
from tracker.models import Conversion

pytestmark = pytest.mark.django_db
GCLID = "Cj0KCQiA5rGuBhCnARIsAN11vgR-q_tVxZ"
HEADER = "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency\r\n"
JAN_2 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CONVERSIONS = "/admin/tracker/conversion/"


@pytest.fixture
def google_campaign():
    source, _rule = source_from_preset("google_ads", create_rule=False)
    return factories.campaign(source, name="Search")


def convert(campaign, external_id=GCLID, *, received=JAN_2, **fields) -> Conversion:
    """A conversion of a new click of ``campaign``, received at ``received``."""
    click = factories.click(campaign, external_id=external_id)
    fields.setdefault("txid", f"T-{Conversion.objects.count() + 1}")
    fields.setdefault("dedup_key", f"t:{fields['txid']}")
    conversion = Conversion.objects.create(click=click, **fields)
    Conversion.objects.filter(pk=conversion.pk).update(created_at=received)
    conversion.refresh_from_db()
    return conversion


def export(conversions, names=None, tz="Europe/Berlin", **options) -> tuple[str, Counter]:
    skipped: Counter[str] = Counter()
    names = names or {"*": "Purchase"}
    lines = google_ads.export_csv(conversions, names, tz, skipped=skipped, **options)
    return "".join(lines), skipped


def test_the_upload_file_row_by_row(google_campaign):
    convert(
        google_campaign,
        payout=Decimal("2.350000"),
        currency="USD",
        conversion_type="sale",
        converted_at=JAN_2,
    )
    convert(
        google_campaign,
        "EAIaIQobChMI_other",
        payout=Decimal("0"),
        currency="EUR",
        conversion_type="lead",
        received=datetime(2026, 7, 1, 22, 30, tzinfo=UTC),
    )
    convert(google_campaign, status=Conversion.Status.PENDING, payout=Decimal("5"))
    convert(google_campaign, is_test=True, payout=Decimal("5"))

    csv_text, skipped = export(Conversion.objects.all(), {"sale": "Purchase", "*": 'Lead, "form"'})

    assert csv_text == (
        "Parameters:TimeZone=Europe/Berlin\r\n"
        + HEADER
        + f"{GCLID},Purchase,2026-01-02 04:04:05,2.35,USD\r\n"  # CET, +1 h
        + 'EAIaIQobChMI_other,"Lead, ""form""",2026-07-02 00:30:00,0,EUR\r\n'  # CEST, +2 h
    )
    assert skipped == Counter({google_ads.SKIP_STATUS: 1, google_ads.SKIP_TEST: 1})
    assert google_ads.summary(2, skipped) == (
        "2 conversions exported; 2 left out: status not exported 1, test conversion 1."
    )


def test_other_statuses_when_asked(google_campaign):
    convert(google_campaign, status=Conversion.Status.PENDING, payout=Decimal("5"))
    csv_text, skipped = export(Conversion.objects.all(), tz="UTC", statuses=["approved", "pending"])
    assert csv_text.splitlines()[0] == "Parameters:TimeZone=+0000"
    assert csv_text.splitlines()[2] == f"{GCLID},Purchase,2026-01-02 03:04:05,5,USD"
    assert not skipped


def test_the_gclid_of_a_named_custom_variable(django_assert_num_queries):
    """A source that takes its own click ID elsewhere and the gclid as a custom variable;
    one query for the conversions, one per traffic source for its variables."""
    source = factories.traffic_source("Mixed", external_id_param="subid")
    TrafficSourceParameter.objects.create(traffic_source=source, slot=4, name="g", param="gclid")
    with_var = factories.campaign(source, name="With var")
    plain = factories.campaign(factories.traffic_source("Taboola"), name="Plain")
    click = factories.click(with_var, external_id="sub-1", var4=f" {GCLID} ")
    Conversion.objects.create(
        click=click, txid="A", dedup_key="t:A", payout=Decimal("1"), converted_at=JAN_2
    )
    convert(plain, "tbl-click-1", payout=Decimal("1"))
    convert(plain, "tbl-click-2", payout=Decimal("1"))

    with django_assert_num_queries(3):
        csv_text, skipped = export(Conversion.objects.all(), tz=ZoneInfo("UTC"))

    assert csv_text.splitlines()[2:] == [f"{GCLID},Purchase,2026-01-02 03:04:05,1,USD"]
    assert skipped == Counter({google_ads.SKIP_NO_GCLID: 2})


@pytest.mark.parametrize(
    ("external_id", "fields", "reason"),
    [
        ("", {}, google_ads.SKIP_NO_GCLID),
        ('=HYPERLINK("https://x.example")', {}, google_ads.SKIP_BAD_GCLID),
        ("gclid with space", {}, google_ads.SKIP_BAD_GCLID),
        ("Cj0K\u200bX\x07", {}, google_ads.SKIP_BAD_GCLID),
        (GCLID, {"payout": Decimal("-3"), "conversion_type": "sale"}, google_ads.SKIP_NEGATIVE),
        (GCLID, {"status": "refunded", "conversion_type": "sale"}, google_ads.SKIP_STATUS),
        (GCLID, {"conversion_type": "upsell"}, google_ads.SKIP_NO_NAME),
    ],
)
def test_left_out(google_campaign, external_id, fields, reason):
    convert(google_campaign, external_id, **fields)
    csv_text, skipped = export(Conversion.objects.all(), {"sale": "Purchase", "lead": "Lead"})
    assert csv_text == "Parameters:TimeZone=Europe/Berlin\r\n" + HEADER
    assert skipped == Counter({reason: 1})


def test_an_unknown_time_zone_fails_before_any_line():
    with pytest.raises(ZoneInfoNotFoundError, match="Mars/Base"):
        google_ads.export_csv([], {"*": "P"}, "Mars/Base")


@pytest.mark.parametrize(
    ("zone", "label"),
    [
        (ZoneInfo("Europe/Berlin"), "Europe/Berlin"),
        (ZoneInfo("America/New_York"), "America/New_York"),
        (ZoneInfo("UTC"), "+0000"),
        (ZoneInfo("Etc/UTC"), "+0000"),
        (UTC, "+0000"),
        (timezone(timedelta(hours=-5)), "-0500"),
        (timezone(timedelta(hours=5, minutes=30)), "+0530"),
    ],
)
def test_zone_label(zone, label):
    assert google_ads.zone_label(zone) == label


@pytest.mark.parametrize(
    ("items", "names"),
    [
        (["Purchase"], {"*": "Purchase"}),
        (["sale = Purchase", " lead=Lead form ", "", "*=Other"],
         {"sale": "Purchase", "lead": "Lead form", "*": "Other"}),
    ],
)  # fmt: skip
def test_parse_names(items, names):
    assert google_ads.parse_names(items) == names


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["sale="], "'sale=': write type=Name"),
        (["=Purchase"], "'=Purchase': write type=Name"),
        (["sale=A", "sale=B"], "The conversion name for 'sale' is given twice."),
        (["A", "B"], "The conversion name for '\\*' is given twice."),
    ],
)
def test_parse_names_refuses(items, message):
    with pytest.raises(ValueError, match=message):
        google_ads.parse_names(items)


# --- manage.py export_google_ads ---------------------------------------------------------------


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("export_google_ads", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_exports_a_period(google_campaign):
    convert(google_campaign, payout=Decimal("2.35"), conversion_type="sale")
    convert(google_campaign, payout=Decimal("9"), received=datetime(2026, 1, 5, tzinfo=UTC))
    convert(google_campaign, "", payout=Decimal("1"))

    out, err = run(
        "--since", "2026-01-02", "--until", "2026-01-05T00:00:00+00:00",
        "--conversion-name", "sale=Purchase", "--conversion-name", "Other",
        "--time-zone", "Asia/Kolkata",
    )  # fmt: skip

    assert out == (
        "Parameters:TimeZone=Asia/Kolkata\r\n"
        + HEADER
        + f"{GCLID},Purchase,2026-01-02 08:34:05,2.35,USD\r\n"
    )
    assert err == "1 conversion exported; 1 left out: no gclid 1.\n"


def test_the_since_day_is_in_the_given_time_zone(google_campaign):
    convert(google_campaign, payout=Decimal("1"))  # 03:04 UTC = 22:04 on Jan 1 in New York
    out, err = run(
        "--since", "2026-01-02", "--conversion-name", "P", "--time-zone", "America/New_York"
    )
    assert out == "Parameters:TimeZone=America/New_York\r\n" + HEADER
    assert err == "0 conversions exported.\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-01-02", "--time-zone", "Mars/Base"], "Unknown time zone 'Mars/Base'"),
        (["--since", "yesterday"], "--since: 'yesterday' is not a date"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], "--until must be after --since"),
        (["--since", "2026-01-02", "--conversion-name", "sale="], "write type=Name"),
    ],
)
def test_the_command_refuses(args, message):
    if "--conversion-name" not in args:
        args = [*args, "--conversion-name", "P"]
    with pytest.raises(CommandError, match=message):
        run(*args)


# --- the admin action ------------------------------------------------------------------------


def test_the_admin_action_asks_then_downloads_the_file(admin_client, google_campaign):
    exported = convert(google_campaign, payout=Decimal("2.35"), conversion_type="sale")
    no_gclid = convert(google_campaign, "", payout=Decimal("1"))
    selected = [exported.pk, no_gclid.pk]
    post = {"action": "export_google_ads", ACTION_CHECKBOX_NAME: selected}

    form = admin_client.post(CONVERSIONS, post)
    assert form.status_code == 200
    page = form.content.decode()
    assert "2 conversions selected" in page
    assert 'name="export"' in page and 'value="export_google_ads"' in page

    refused = admin_client.post(
        CONVERSIONS,
        {**post, "export": "1", "names": "sale=", "time_zone": "UTC", "statuses": ["approved"]},
    )
    assert "write type=Name" in refused.content.decode()

    answer = admin_client.post(
        CONVERSIONS,
        {**post, "export": "1", "names": "sale = Purchase", "time_zone": "Europe/Berlin",
         "statuses": ["approved"]},
    )  # fmt: skip
    assert answer.status_code == 200
    assert answer["Content-Type"] == "text/csv; charset=utf-8"
    assert answer["Content-Disposition"].startswith('attachment; filename="google-ads-')
    assert b"".join(answer.streaming_content).decode() == (
        "Parameters:TimeZone=Europe/Berlin\r\n"
        + HEADER
        + f"{GCLID},Purchase,2026-01-02 04:04:05,2.35,USD\r\n"
    )
    shown = admin_client.get(CONVERSIONS).content.decode()
    assert "1 conversion exported; 1 left out: no gclid 1." in shown


def test_the_admin_action_on_all_matching_conversions(admin_client, google_campaign):
    convert(google_campaign, payout=Decimal("1"))
    convert(google_campaign, "EAIaIQobChMI_b", payout=Decimal("2"))
    answer = admin_client.post(
        CONVERSIONS,
        {"action": "export_google_ads", "select_across": "1", ACTION_CHECKBOX_NAME: [1],
         "export": "1", "names": "Lead", "time_zone": "UTC", "statuses": ["approved"]},
    )  # fmt: skip
    rows = b"".join(answer.streaming_content).decode().splitlines()[2:]
    assert sorted(rows) == [
        f"{GCLID},Lead,2026-01-02 03:04:05,1,USD",
        "EAIaIQobChMI_b,Lead,2026-01-02 03:04:05,2,USD",
    ]
