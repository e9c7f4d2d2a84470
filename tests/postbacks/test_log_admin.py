"""The delivery log in admin at scale: filters, search, pagination without COUNT, CSV export."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.contrib.admin.templatetags.admin_list import result_headers
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from postbacks.admin import log
from postbacks.admin.log import AttemptAdmin, DeliveryAdmin, LogPaginator, delivery_ids_for
from postbacks.models import Attempt, Delivery
from tests import factories
from tracker.models import Conversion

pytestmark = pytest.mark.django_db

ATTEMPTS = "/admin/postbacks/attempt/"
DELIVERIES = "/admin/postbacks/delivery/"


class World:
    """Two sources, offers, campaigns and rules (and a rule that never fired); three
    deliveries and four attempts:

    - ``da``: rule A, source A, failed (last 404), attempts a1 (404, failed) and a2
      (no response, 1.5 s), 3-4 days old, click ``ext-a``, txid ``tx-a``;
    - ``db``: rule B, source B, delivered, attempts b1 (500) and b2 (200), an hour or two old,
      click ``ext-b``, txid ``tx-b``;
    - ``ds``: rule A, source A, scheduled, no attempt, click ``ext-a``, no conversion.
    """

    def __init__(self) -> None:
        now = timezone.now()
        self.source_a = factories.traffic_source("Source A")
        self.source_b = factories.traffic_source("Source B")
        self.offer_a = factories.offer("Offer A")
        self.offer_b = factories.offer("Offer B")
        self.campaign_a = factories.campaign(self.source_a, self.offer_a, name="Campaign A")
        self.campaign_b = factories.campaign(self.source_b, self.offer_b, name="Campaign B")
        self.rule_a = factories.rule("https://a.example/?c={externalid}", name="Rule A")
        self.rule_b = factories.rule("https://b.example/?c={externalid}", name="Rule B")
        self.rule_idle = factories.rule("https://c.example/?c={externalid}", name="Rule idle")
        self.click_a = factories.click(self.campaign_a, external_id="ext-a")
        self.click_b = factories.click(self.campaign_b, external_id="ext-b")
        self.conversion_a = Conversion.objects.create(click=self.click_a, txid="tx-a")
        self.conversion_b = Conversion.objects.create(click=self.click_b, txid="tx-b")
        self.da = factories.delivery(
            "https://a.example/?c=ext-a&token=s3cret", rule=self.rule_a, click=self.click_a,
            conversion=self.conversion_a, traffic_source=self.source_a, status="failed",
            attempt_count=2, last_status_code=404, last_error="HTTP 404 from a.example",
        )  # fmt: skip
        self.db = factories.delivery(
            "https://b.example/?c=ext-b", rule=self.rule_b, click=self.click_b,
            conversion=self.conversion_b, traffic_source=self.source_b, status="delivered",
            attempt_count=2, last_status_code=200,
        )  # fmt: skip
        self.ds = factories.delivery(
            "https://a.example/?c=ext-a", rule=self.rule_a, click=self.click_a,
            traffic_source=self.source_a, due_in=3600,
        )  # fmt: skip
        Delivery.objects.filter(pk=self.da.pk).update(created_at=now - timedelta(days=5))

        def attempt(delivery, number, ago, code, outcome, ms=50, error=""):
            return Attempt.objects.create(
                delivery=delivery, number=number, started_at=now - ago, method="GET",
                url=delivery.url.replace("s3cret", "***"), status_code=code, outcome=outcome,
                duration_ms=ms, error=error, response_body="a long answer " * 50,
            )  # fmt: skip

        self.a1 = attempt(self.da, 1, timedelta(days=4), 404, "failed", error="HTTP 404")
        self.a2 = attempt(self.da, 2, timedelta(days=3), None, "retry", 1500, "Timed out")
        self.b1 = attempt(self.db, 1, timedelta(hours=2), 500, "retry", 30, "HTTP 500")
        self.b2 = attempt(self.db, 2, timedelta(hours=1), 200, "delivered", 40)

    def label(self, obj) -> str:
        names = {
            getattr(self, name).pk: name for name in ("a1", "a2", "b1", "b2")
        } if isinstance(obj, Attempt) else {
            getattr(self, name).pk: name for name in ("da", "db", "ds")
        }  # fmt: skip
        return names[obj.pk]


@pytest.fixture
def world() -> World:
    return World()


def shown(response, world: World) -> set[str]:
    assert response.status_code == 200, response
    return {world.label(obj) for obj in response.context["cl"].result_list}


def day(moment) -> str:
    return timezone.localtime(moment).date().isoformat()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"a1", "a2", "b1", "b2"}),
        ("outcome__exact=failed", {"a1"}),
        ("outcome__exact=retry", {"a2", "b1"}),
        ("http=2xx", {"b2"}),
        ("http=4xx", {"a1"}),
        ("http=5xx", {"b1"}),
        ("http=none", {"a2"}),
        ("slow=1", {"a2"}),
        ("rule={rule_a}", {"a1", "a2"}),
        ("rule={rule_b}", {"b1", "b2"}),
        ("rule={rule_idle}", set()),
        ("source={source_a}", {"a1", "a2"}),
        ("source={source_b}", {"b1", "b2"}),
        ("offer={offer_b}", {"b1", "b2"}),
        ("campaign={campaign_a}", {"a1", "a2"}),
        ("rule={rule_a}&http=none", {"a2"}),
        ("rule={rule_a}&outcome__exact=delivered", set()),
    ],
)
def test_attempt_filters(admin_client, world, query, expected):
    ids = {name: getattr(world, name).pk for name in vars(world) if name[:4] != "conv"}
    response = admin_client.get(f"{ATTEMPTS}?{query.format(**ids)}")
    assert shown(response, world) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {"da", "db", "ds"}),
        ("status__exact=failed", {"da"}),
        ("status__exact=scheduled", {"ds"}),
        ("http=4xx", {"da"}),
        ("http=2xx", {"db"}),
        ("http=none", {"ds"}),
        ("event_type__exact=conversion", {"da", "db", "ds"}),
        ("rule={rule_a}", {"da", "ds"}),
        ("source={source_b}", {"db"}),
        ("offer={offer_a}", {"da", "ds"}),
        ("campaign={campaign_b}", {"db"}),
        ("rule=not-a-number", {"da", "db", "ds"}),
    ],
)
def test_delivery_filters(admin_client, world, query, expected):
    ids = {name: getattr(world, name).pk for name in vars(world) if name[:4] != "conv"}
    response = admin_client.get(f"{DELIVERIES}?{query.format(**ids)}")
    assert shown(response, world) == expected


def test_date_range_filters(admin_client, world):
    since = timezone.localtime(timezone.now() - timedelta(days=1))
    attempts = admin_client.get(
        ATTEMPTS,
        {
            "started_at__range__gte_0": since.date().isoformat(),
            "started_at__range__gte_1": since.strftime("%H:%M:%S"),
        },
    )
    assert shown(attempts, world) == {"b1", "b2"}
    old = admin_client.get(
        ATTEMPTS,
        {
            "started_at__range__lte_0": since.date().isoformat(),
            "started_at__range__lte_1": since.strftime("%H:%M:%S"),
        },
    )
    assert shown(old, world) == {"a1", "a2"}
    today = day(timezone.now())
    recent = admin_client.get(DELIVERIES, {"created_at__range__gte": today})
    assert shown(recent, world) == {"db", "ds"}
    five_days_ago = day(timezone.now() - timedelta(days=5))
    that_day = admin_client.get(
        DELIVERIES,
        {"created_at__range__gte": five_days_ago, "created_at__range__lte": five_days_ago},
    )
    assert shown(that_day, world) == {"da"}


def test_filters_offer_only_what_exists(admin_client, world):
    deliveries = admin_client.get(DELIVERIES).content.decode()
    assert f"?rule={world.rule_a.pk}" in deliveries
    assert f"?rule={world.rule_idle.pk}" not in deliveries
    attempts = admin_client.get(ATTEMPTS).content.decode()
    assert "?http=4xx" in attempts
    assert "?http=3xx" not in attempts  # no redirect answer in the log
    assert f"?campaign={world.campaign_b.pk}" in attempts


@pytest.mark.parametrize(
    ("term", "attempts", "deliveries"),
    [
        ("ext-a", {"a1", "a2"}, {"da", "ds"}),
        ("  ext-b ", {"b1", "b2"}, {"db"}),
        ("tx-a", {"a1", "a2"}, {"da"}),
        ("tx-b", {"b1", "b2"}, {"db"}),
        ("click_a", {"a1", "a2"}, {"da", "ds"}),
        ("click_b", {"b1", "b2"}, {"db"}),
        ("public_id", {"b1", "b2"}, {"db"}),
        ("nothing-like-it", set(), set()),
        ("00000000-0000-4000-8000-000000000000", set(), set()),
    ],
)
def test_search_by_click_id_external_id_txid_and_delivery_id(
    admin_client, world, term, attempts, deliveries
):
    if term.startswith("click_"):
        term = str(getattr(world, term).pk)
    elif term == "public_id":
        term = str(world.db.public_id)
    assert shown(admin_client.get(ATTEMPTS, {"q": term}), world) == attempts
    assert shown(admin_client.get(DELIVERIES, {"q": term}), world) == deliveries


def test_search_is_a_union_of_indexed_lookups_not_an_or(world):
    with CaptureQueriesContext(connection) as queries:
        ids = delivery_ids_for(str(world.click_a.pk))
    assert sorted(ids) == sorted([world.da.pk, world.ds.pk])
    (query,) = [q["sql"] for q in queries.captured_queries]
    assert query.count("UNION") == 3
    assert " OR " not in query
    assert delivery_ids_for("   ") == []


def test_search_combines_with_filters(admin_client, world):
    response = admin_client.get(DELIVERIES, {"q": "ext-a", "status__exact": "scheduled"})
    assert shown(response, world) == {"ds"}


LIST_URLS = [
    ATTEMPTS,
    f"{ATTEMPTS}?outcome__exact=failed",
    f"{ATTEMPTS}?q=ext-a",
    f"{ATTEMPTS}?p=2",
    f"{ATTEMPTS}?slow=1&http=none",
    DELIVERIES,
    f"{DELIVERIES}?status__exact=failed&http=4xx",
    f"{DELIVERIES}?q=tx-b",
    f"{DELIVERIES}?p=2",
]


@pytest.mark.parametrize("url", LIST_URLS)
def test_list_pages_never_count_the_table(admin_client, world, monkeypatch, url):
    monkeypatch.setattr(AttemptAdmin, "list_per_page", 2)
    monkeypatch.setattr(DeliveryAdmin, "list_per_page", 2)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)
    assert response.status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    counts = [s for s in statements if re.search(r"\bCOUNT\(", s, re.IGNORECASE)]
    whole_table = [
        s
        for s in counts
        if re.search(r'FROM "postbacks_(attempt|delivery)"', s) and " WHERE " not in s
    ]
    assert not whole_table, whole_table
    assert not counts, counts  # nor a filtered COUNT: the list reads one row past the page


@pytest.mark.parametrize("url", [ATTEMPTS, DELIVERIES])
def test_list_pages_do_not_read_the_heavy_text_columns(admin_client, world, url):
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(url)
    statements = "\n".join(q["sql"] for q in queries.captured_queries)
    assert '"postbacks_attempt"."response_body"' not in statements
    assert '"postbacks_delivery"."body"' not in statements
    assert '"postbacks_delivery"."headers"' not in statements
    # The URL and the errors only as a short prefix, SUBSTRING("..."."url", 1, n).
    for column in ('"postbacks_attempt"."url"', '"postbacks_attempt"."error"',
                   '"postbacks_delivery"."url"', '"postbacks_delivery"."last_error"'):  # fmt: skip
        assert not re.search(rf"(?<!\(){re.escape(column)}", statements), column


def test_pages_without_a_count(admin_client, world, monkeypatch):
    monkeypatch.setattr(AttemptAdmin, "list_per_page", 3)
    first = admin_client.get(ATTEMPTS)
    assert [world.label(a) for a in first.context["cl"].result_list] == ["b2", "b1", "a2"]
    page = first.content.decode()
    assert "Next \u203a" in page and "?p=2" in page
    assert "\u2039 Previous" not in page
    assert re.search(r"(more than 3|about \d+) attempts", page)
    last = admin_client.get(ATTEMPTS, {"p": 2})
    assert [world.label(a) for a in last.context["cl"].result_list] == ["a1"]
    page = last.content.decode()
    assert "\u2039 Previous" in page and "Next \u203a" not in page
    assert "4 attempts" in page  # the last page is known: the count is exact
    beyond = admin_client.get(ATTEMPTS, {"p": 3})
    assert beyond.status_code == 302 and beyond["Location"].endswith("?e=1")


def test_deep_pages_read_ids_first_with_the_same_rows(admin_client, world, monkeypatch):
    monkeypatch.setattr(AttemptAdmin, "list_per_page", 1)
    plain = [
        [world.label(a) for a in admin_client.get(ATTEMPTS, {"p": p}).context["cl"].result_list]
        for p in (1, 2, 3, 4)
    ]
    monkeypatch.setattr(LogPaginator, "deferred_offset", 0)
    with CaptureQueriesContext(connection) as queries:
        deferred = [
            [world.label(a) for a in admin_client.get(ATTEMPTS, {"p": p}).context["cl"].result_list]
            for p in (1, 2, 3, 4)
        ]
    assert deferred == plain == [["b2"], ["b1"], ["a2"], ["a1"]]
    ids_first = [
        q["sql"]
        for q in queries.captured_queries
        if re.match(r'SELECT "postbacks_attempt"\."id"( AS "pk")? FROM', q["sql"])
    ]
    assert ids_first, "the ids are read on their own first"


def follow(client, url: str, world: World, link: str, pages: int) -> list[list[str]]:
    """The rows of ``pages`` pages, from ``url`` on through the "Next" (or "Previous") link."""
    seen = []
    for _ in range(pages):
        response = client.get(url)
        cl = response.context["cl"]
        seen.append([world.label(a) for a in cl.result_list])
        url = ATTEMPTS + getattr(cl, link)
    return seen


def test_next_and_previous_links_page_by_keyset(admin_client, world, monkeypatch):
    monkeypatch.setattr(AttemptAdmin, "list_per_page", 1)
    with CaptureQueriesContext(connection) as queries:
        forward = follow(admin_client, ATTEMPTS, world, "next_url", 4)
    assert forward == [["b2"], ["b1"], ["a2"], ["a1"]]
    assert not any("OFFSET" in q["sql"] for q in queries.captured_queries)
    last = admin_client.get(ATTEMPTS, {"p": 4}).context["cl"]
    assert "c=n" not in last.get_query_string() and "c=p3" in last.previous_url
    backward = follow(admin_client, ATTEMPTS + last.previous_url, world, "previous_url", 3)
    assert backward == [["a2"], ["b1"], ["b2"]]
    # With a filter too, and the cursor stays out of the export link and the filters.
    filtered = follow(admin_client, f"{ATTEMPTS}?rule={world.rule_a.pk}", world, "next_url", 2)
    assert filtered == [["a2"], ["a1"]]
    page = admin_client.get(f"{ATTEMPTS}{last.previous_url}&rule={world.rule_a.pk}")
    (export,) = re.findall(r'href="([^"]*export\.csv[^"]*)"', page.content.decode())
    assert export == f"/admin/postbacks/attempt/export.csv?rule={world.rule_a.pk}"


@pytest.mark.parametrize("cursor", ["garbage", "n3~2020-01-01T00:00:00+00:00~1", "n2~x~y", "q2~a"])
def test_a_cursor_for_another_page_or_a_bad_one_is_ignored(admin_client, world, monkeypatch,
                                                           cursor):  # fmt: skip
    monkeypatch.setattr(AttemptAdmin, "list_per_page", 1)
    response = admin_client.get(ATTEMPTS, {"p": 2, "c": cursor})
    assert shown(response, world) == {"b1"}


def test_paginator_on_a_queryset(world):
    paginator = LogPaginator(Attempt.objects.order_by("-started_at", "-id"), 3)
    first = paginator.page(1)
    assert len(first.object_list) == 3 and first.has_next() and not first.has_previous()
    assert first.next_page_number() == 2
    assert paginator.count >= 4 and not paginator.exact
    assert list(paginator.get_elided_page_range(1)) == [1, 2]
    second = paginator.page(2)
    assert [a.pk for a in second.object_list] == [world.a1.pk]
    assert not second.has_next()
    assert (second.start_index(), second.end_index()) == (4, 4)
    assert paginator.count == 4 and paginator.exact
    filtered = LogPaginator(Attempt.objects.filter(outcome="retry").order_by("-started_at"), 1)
    if connection.vendor != "postgresql":
        assert paginator.estimate() is filtered.estimate() is None
        return
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE postbacks_attempt")
    assert paginator.estimate() == 4  # pg_class.reltuples
    assert isinstance(filtered.estimate(), int)  # the planner's row estimate
    filtered.page(1)
    assert filtered.count >= 2 and not filtered.exact


def test_columns_have_distinct_headings_and_show_txid_external_id_due_and_error(
    admin_client, world
):
    for url in (ATTEMPTS, DELIVERIES):
        cl = admin_client.get(url).context["cl"]
        headings = [h["text"] for h in result_headers(cl) if h["text"]]
        assert len(headings) == len(set(headings)), headings
    delivery_headings = [h["text"] for h in result_headers(cl)]
    for heading in ("external ID", "txid", "due", "last error"):
        assert heading in delivery_headings
    page = admin_client.get(DELIVERIES, {"status__exact": "failed"}).content.decode()
    assert "tx-a" in page and "HTTP 404 from a.example" in page
    page = admin_client.get(ATTEMPTS, {"q": "tx-b"}).content.decode()
    assert "tx-b" in page and "ext-b" in page and "Source B" in page


# --- CSV export ----------------------------------------------------------------------------------


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_export_link_honours_the_filters_and_masks_urls(admin_client, world):
    page = admin_client.get(DELIVERIES, {"rule": world.rule_a.pk}).content.decode()
    assert f"export.csv?rule={world.rule_a.pk}" in page
    assert "Export these 2 rows as CSV" in page
    rows = read_csv(admin_client.get(f"{DELIVERIES}export.csv", {"rule": world.rule_a.pk}))
    header, *data = rows
    assert header[:4] == ["delivery", "delivery ID", "created at", "status"]
    assert sorted(r[header.index("delivery")] for r in data) == sorted(
        [str(world.da.pk), str(world.ds.pk)]
    )
    urls = [r[header.index("URL")] for r in data]
    assert "https://a.example/?c=ext-a&token=***" in urls
    assert not any("s3cret" in line for row in rows for line in row)
    failed = next(r for r in data if r[header.index("status")] == "failed")
    assert failed[header.index("txid")] == "tx-a"
    assert failed[header.index("external ID")] == "ext-a"


def test_export_of_attempts_with_search_and_order(admin_client, world):
    rows = read_csv(admin_client.get(f"{ATTEMPTS}export.csv", {"q": "ext-b"}))
    header, *data = rows
    assert [(r[header.index("attempt")], r[header.index("outcome")]) for r in data] == [
        ("2", "delivered"),
        ("1", "retry"),
    ]
    assert {r[header.index("rule")] for r in data} == {"Rule B"}
    assert {r[header.index("traffic source")] for r in data} == {"Source B"}


def test_export_action_exports_the_selected_rows(admin_client, world):
    response = admin_client.post(
        ATTEMPTS, {"action": "export_csv", "_selected_action": [world.a2.pk, world.b2.pk]}
    )
    header, *data = read_csv(response)
    assert sorted(r[header.index("attempt")] + r[header.index("outcome")] for r in data) == [
        "2delivered",
        "2retry",
    ]
    assert all("s3cret" not in r[header.index("URL")] for r in data)


def test_export_is_capped_and_quotes_formulas(admin_client, world, monkeypatch):
    world.click_b.external_id = "=HYPERLINK(1)"
    world.click_b.save()
    monkeypatch.setattr(log, "EXPORT_MAX_ROWS", 1)
    header, *data = read_csv(admin_client.get(f"{DELIVERIES}export.csv", {"q": "tx-b"}))
    assert len(data) == 1
    assert data[0][header.index("external ID")] == "'=HYPERLINK(1)"
    header, *data = read_csv(admin_client.get(f"{DELIVERIES}export.csv"))
    assert len(data) == 1


def test_export_needs_the_view_permission(client, world):
    user = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    client.force_login(user)
    assert client.get(f"{ATTEMPTS}export.csv").status_code == 403
    user.user_permissions.set(Permission.objects.filter(codename="view_attempt"))
    assert len(read_csv(client.get(f"{ATTEMPTS}export.csv"))) == 5


def test_export_with_a_bad_filter_goes_back_to_the_list(admin_client, world):
    response = admin_client.get(f"{ATTEMPTS}export.csv", {"no_such_field": "1"})
    assert response.status_code == 302 and response["Location"].endswith("?e=1")


# --- Actions -------------------------------------------------------------------------------------


def test_retry_from_the_attempt_list_reschedules_their_delivery(admin_client, world):
    response = admin_client.post(
        ATTEMPTS, {"action": "retry_now", "_selected_action": [world.a1.pk, world.a2.pk]}
    )
    assert response.status_code == 302
    world.da.refresh_from_db()
    assert world.da.status == "scheduled"
    assert world.da.max_attempts >= world.da.attempt_count + 1


def test_retry_skips_delivered_ones_and_says_so(admin_client, world):
    response = admin_client.post(
        DELIVERIES,
        {"action": "retry_now", "_selected_action": [world.da.pk, world.db.pk]},
        follow=True,
    )
    text = [str(m) for m in response.context["messages"]]
    assert "1 delivery scheduled." in text
    assert "1 skipped: only failed or waiting deliveries can be retried." in text
    world.db.refresh_from_db()
    assert world.db.status == "delivered"


def test_retry_across_all_pages_of_a_filter(admin_client, world, monkeypatch):
    monkeypatch.setattr(DeliveryAdmin, "list_per_page", 1)
    admin_client.post(
        f"{DELIVERIES}?rule={world.rule_a.pk}",
        {"action": "retry_now", "select_across": "1", "_selected_action": [world.da.pk]},
    )
    world.da.refresh_from_db()
    assert world.da.status == "scheduled"


def test_cancel_only_cancels_waiting_deliveries(admin_client, world):
    admin_client.post(
        DELIVERIES, {"action": "cancel", "_selected_action": [world.ds.pk, world.db.pk]}
    )
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert statuses[world.ds.pk] == "cancelled"
    assert statuses[world.db.pk] == "delivered"


def test_view_only_staff_may_export_but_not_retry(client, world):
    user = get_user_model().objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_delivery", "view_attempt"])
    )
    client.force_login(user)
    for url in (DELIVERIES, ATTEMPTS):
        page = client.get(url).content.decode()
        assert 'value="export_csv"' in page
        assert 'value="retry_now"' not in page
        assert 'value="cancel"' not in page
    client.post(DELIVERIES, {"action": "retry_now", "_selected_action": [world.da.pk]})
    world.da.refresh_from_db()
    assert world.da.status == "failed"
