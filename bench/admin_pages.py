"""Admin list pages of the postback log at scale: time each page against 2 million attempts.

    .venv/bin/python bench/admin_pages.py                    # 2,000,000 attempts
    .venv/bin/python bench/admin_pages.py --attempts 200000  # smaller
    .venv/bin/python bench/admin_pages.py --rebuild         # drop the data and build anew

Own database (``--database-url``, default ``postgres://postgres@127.0.0.1:5432/pb_bench_admin``),
created and migrated if missing. The data (8 traffic sources, offers, campaigns and rules
plus a rare rule; one click, conversion and delivery per planned postback, 1 to 4 attempts
each, spread over the last 30 days) is written by ``INSERT ... SELECT generate_series``
and kept: a later run with the same ``--attempts`` reuses it. Then a superuser logged in
with the Django test client opens each page ``--repeat`` times (after one warm-up) and the
median is printed, with the number of SQL queries; the target is < 300 ms per page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/pb_bench_admin"
LABELS = [f"Bench {c}" for c in "ABCDEFGH"]
RARE_RULE = "Bench rare postback"
DAYS = 30
# Attempts per delivery: 70 % of the delivered ones take 1, the rest 2; failed ones 4,
# cancelled ones 1, scheduled ones (the newest 0.5 %) none yet. About 1.5 on average.
ATTEMPTS_PER_DELIVERY = 1.5
TARGET_MS = 300


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
    os.environ.setdefault("SECRET_KEY", "bench-admin-pages")
    # Static files from the apps (no collectstatic manifest); the queries are captured anyway.
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
    os.environ.setdefault("VAR_DIR", str(ROOT / "var" / "bench-admin"))
    sys.path.insert(0, str(ROOT))
    import psycopg

    url = urlsplit(database_url)
    admin_url = url._replace(path="/postgres").geturl()
    name = url.path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def insert_select(model, count_sql: str, exprs: dict[str, str], params: list) -> None:
    """``INSERT INTO <model> SELECT <exprs> FROM <count_sql>``, every other column from its
    Python default, so the bench survives new columns with defaults."""
    from django.db import connection

    columns, selects, defaults = [], [], []
    for field in model._meta.concrete_fields:
        if field.column not in exprs and field.get_internal_type().endswith("AutoField"):
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.column in exprs:
            selects.append(exprs[field.column])
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            selects.append("now()")
        else:
            selects.append("%s")
            value = field.get_default()
            defaults.append(field.get_db_prep_save(value, connection))
    missing = set(exprs) - {f.column for f in model._meta.concrete_fields}
    assert not missing, missing
    sql = (
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "
        f"SELECT {', '.join(selects)} FROM {count_sql}"
    )
    # The default values come first in the SELECT list, then the FROM clause's parameters;
    # interleaving is by position, so pass the defaults where their %s stand.
    with connection.cursor() as cursor:
        cursor.execute(sql, [*defaults, *params])


def build(deliveries: int) -> None:
    """Write the bench data: ``deliveries`` clicks, conversions and deliveries, and about
    1.5 attempts per delivery."""
    from decimal import Decimal

    from django.db import connection

    from bench.fixtures import campaign_with_rule
    from campaigns.models import AffiliateNetwork, Campaign, Offer, TrafficSource
    from postbacks.models import Attempt, Delivery, PostbackRule
    from tracker.models import Click, Conversion

    with connection.cursor() as cursor:
        # CASCADE: and every table that refers to these (inbound log, status changes...).
        models = (Attempt, Delivery, Conversion, Click, PostbackRule, Campaign, Offer)
        tables = [m._meta.db_table for m in (*models, AffiliateNetwork, TrafficSource)]
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    sources, offers, campaigns, rules = [], [], [], []
    for label in LABELS:
        source, offer, campaign = campaign_with_rule(
            label, "https://ts.example", "/pb?c={externalid}", Decimal("1.5")
        )
        sources.append(source.pk)
        offers.append(offer.pk)
        campaigns.append(campaign.pk)
        rules.append(PostbackRule.objects.get(name=f"{label} postback").pk)
    rare = PostbackRule.objects.create(
        name=RARE_RULE, event_type="conversion", url_template="https://ts.example/rare"
    ).pk

    def arr(ids: list[int]) -> str:
        return "ARRAY[" + ",".join(str(i) for i in ids) + "]::bigint[]"

    n = deliveries
    # Row i (1..n) was created at now - 30 days * (n - i) / n: the newest is row n.
    created = f"now() - interval '{DAYS} days' * ((%(n)s - g.i)::float / %(n)s)"
    created = created.replace("%(n)s", str(n))
    series = "generate_series(1, %s) AS g(i)"
    click_uuid = "md5('bench-click-' || g.i)::uuid"
    t0 = time.monotonic()
    insert_select(
        Click,
        series,
        {
            "id": click_uuid,
            "campaign_id": f"({arr(campaigns)})[1 + mod(g.i, 8)]",
            "offer_id": f"({arr(offers)})[1 + mod(g.i, 8)]",
            "traffic_source_id": f"({arr(sources)})[1 + mod(g.i, 8)]",
            "external_id": "'bx-' || g.i",
            "ip": "'127.0.0.1'",
            "created_at": created,
        },
        [n],
    )
    insert_select(
        Conversion,
        series,
        {
            "click_id": click_uuid,
            "txid": "'btx-' || g.i",
            "conversion_type": "'lead'",
            "status": "'approved'",
            "payout": "1.5",
            "created_at": created + " + interval '1 minute'",
        },
        [n],
    )
    print(f"clicks, conversions: {n:,} each in {time.monotonic() - t0:.0f} s", flush=True)
    # Status: 8 % failed, 1 % cancelled, the newest 0.5 % scheduled, the rest delivered.
    scheduled_from = n - n // 200
    status = (
        f"CASE WHEN g.i > {scheduled_from} THEN 'scheduled' WHEN mod(g.i, 100) < 8 THEN 'failed' "
        "WHEN mod(g.i, 100) = 8 THEN 'cancelled' ELSE 'delivered' END"
    )
    tries = (
        f"CASE WHEN g.i > {scheduled_from} THEN 0 WHEN mod(g.i, 100) < 8 THEN 4 "
        "WHEN mod(g.i, 100) = 8 THEN 1 WHEN mod(g.i, 10) < 7 THEN 1 ELSE 2 END"
    )
    t0 = time.monotonic()
    conversion_ids = (
        f"(SELECT id, click_id FROM {Conversion._meta.db_table}) AS cv "
        f"JOIN generate_series(1, %s) AS g(i) ON cv.click_id = {click_uuid}"
    )
    insert_select(
        Delivery,
        conversion_ids,
        {
            "rule_id": f"CASE WHEN mod(g.i, 1000) = 500 THEN {rare} "
            f"ELSE ({arr(rules)})[1 + mod(g.i / 8, 8)] END",
            "event_type": "'conversion'",
            "click_id": "cv.click_id",
            "conversion_id": "cv.id",
            "event_detail": "'created approved'",
            "traffic_source_id": f"({arr(sources)})[1 + mod(g.i, 8)]",
            "idempotency_key": "'bench:' || g.i",
            "public_id": "md5('bench-delivery-' || g.i)::uuid",
            "status": status,
            "kind": "'s2s'",
            "method": "'GET'",
            "url": "'https://ts.example/pb?c=bx-' || g.i || '&token=s3cret'",
            "host": "'ts.example:443'",
            "due_at": created,
            "attempt_count": tries,
            "last_status_code": f"CASE WHEN g.i > {scheduled_from} THEN NULL "
            "WHEN mod(g.i, 100) < 4 THEN 500 WHEN mod(g.i, 100) < 7 THEN 404 "
            "WHEN mod(g.i, 100) < 9 THEN NULL ELSE 200 END",
            "last_error": f"CASE WHEN g.i > {scheduled_from} THEN '' "
            "WHEN mod(g.i, 100) < 4 THEN 'HTTP 500' WHEN mod(g.i, 100) < 7 THEN 'HTTP 404' "
            "WHEN mod(g.i, 100) < 9 THEN 'Timed out after 10 s' ELSE '' END",
            "delivered_at": f"CASE WHEN ({status}) = 'delivered' "
            f"THEN {created} + interval '2 minutes' * ({tries}) END",
            "created_at": created,
            "updated_at": f"{created} + interval '2 minutes' * ({tries})",
        },
        [n],
    )
    print(f"deliveries: {n:,} in {time.monotonic() - t0:.0f} s", flush=True)
    t0 = time.monotonic()
    # Attempt k of a delivery with t tries: the last one of a delivered delivery succeeded,
    # every other one failed (5xx, 404, a timeout or a redirect) and was retried.
    delivery_rows = (
        f"(SELECT id, attempt_count AS t, status, created_at, "
        f"CAST(substring(idempotency_key from 7) AS int) AS i "
        f"FROM {Delivery._meta.db_table} WHERE idempotency_key LIKE 'bench:%%' "
        f"AND attempt_count > 0) AS d "
        f"CROSS JOIN LATERAL generate_series(1, d.t) AS k(n) "
        f"CROSS JOIN LATERAL (SELECT d.i + k.n AS i) AS g"
    )
    last_ok = "(d.status = 'delivered' AND k.n = d.t)"
    insert_select(
        Attempt,
        delivery_rows,
        {
            "delivery_id": "d.id",
            "number": "k.n",
            "started_at": "d.created_at + interval '2 minutes' * (k.n - 1)",
            "method": "'GET'",
            "url": "'https://ts.example/pb?c=bx-' || d.i || '&token=***'",
            "status_code": f"CASE WHEN {last_ok} THEN 200 WHEN mod(g.i, 20) = 0 THEN 301 "
            "WHEN mod(g.i, 4) = 0 THEN 404 WHEN mod(g.i, 4) = 1 THEN NULL ELSE 500 END",
            "response_body": f"CASE WHEN {last_ok} THEN 'OK' ELSE 'error page' END",
            "error": f"CASE WHEN {last_ok} THEN '' WHEN mod(g.i, 4) = 1 "
            "THEN 'Timed out after 10 s' ELSE 'HTTP error' END",
            "duration_ms": "CASE WHEN mod(d.i, 50) = 0 THEN 1500 + mod(d.i, 3000) "
            "ELSE 40 + mod(d.i, 250) END",
            "outcome": f"CASE WHEN {last_ok} THEN 'delivered' "
            "WHEN d.status = 'failed' AND k.n = d.t THEN 'failed' ELSE 'retry' END",
        },
        [],
    )
    print(f"attempts in {time.monotonic() - t0:.0f} s; VACUUM ANALYZE", flush=True)
    connection.ensure_connection()
    with connection.cursor() as cursor:
        for model in (Click, Conversion, Delivery, Attempt):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")


def ensure_data(attempts: int, rebuild: bool) -> None:
    from django.db import connection

    deliveries = round(attempts / ATTEMPTS_PER_DELIVERY)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM postbacks_delivery WHERE idempotency_key LIKE 'bench:%%'"
        )
        have = cursor.fetchone()[0]
    if have == deliveries and not rebuild:
        print(f"reusing the data: {have:,} deliveries", flush=True)
        return
    t0 = time.monotonic()
    build(deliveries)
    print(f"built in {time.monotonic() - t0:.0f} s", flush=True)


def timed(client, url: str, repeat: int, before=None) -> tuple[float, float, int]:
    """Median milliseconds of ``repeat`` GETs after a warm-up, of which in SQL, the queries.

    ``before`` is called ahead of each request, outside the timing (e.g. to drop a cache).
    """
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    times, sql_times = [], []
    for _ in range(repeat):
        if before:
            before()
        with CaptureQueriesContext(connection) as queries:
            t0 = time.perf_counter()
            response = client.get(url)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        assert body
        sql_times.append(sum(float(q["time"]) for q in queries.captured_queries) * 1000)
    return statistics.median(times), statistics.median(sql_times), len(queries)


def pages() -> list[tuple[str, str]]:
    """(label, URL) of every page to time, with filter values from the bench data."""
    from django.db.models import Max, Min

    from campaigns.models import Campaign, Offer, TrafficSource
    from postbacks.models import Attempt, Delivery, PostbackRule

    label = LABELS[3]
    source = TrafficSource.objects.get(name=f"{label} source").pk
    offer = Offer.objects.get(name=f"{label} offer").pk
    campaign = Campaign.objects.get(name=f"{label} campaign").pk
    rule = PostbackRule.objects.get(name=f"{label} postback").pk
    rare = PostbackRule.objects.get(name=RARE_RULE).pk
    newest = Delivery.objects.filter(idempotency_key__startswith="bench:").aggregate(
        Max("created_at"), Min("created_at")
    )
    day = (newest["created_at__max"] - timedelta(days=7)).date()
    # A middle delivery with attempts and a conversion, searched three ways.
    sample = (
        Delivery.objects.filter(idempotency_key="bench:" + str(Delivery.objects.count() // 2))
        .select_related("click", "conversion")
        .get()
    )
    # The 10,000th newest attempt: the export of the attempts from then on is 10,000 rows.
    newest_first = Attempt.objects.order_by("-started_at", "-id")
    ten_k = newest_first.values_list("started_at", flat=True)[min(9999, newest_first.count() - 1)]

    def next_cursor(queryset, key: str, page: int) -> str:
        """The "Next" link's cursor to ``page``: the keys of the last row of the page before
        (read here with an OFFSET, outside the timing)."""
        started, pk = queryset.order_by(f"-{key}", "-id").values_list(key, "id")[
            (page - 1) * 100 - 1
        ]
        return f"n{page}~{started.isoformat()}~{pk}"

    attempts_by_campaign = Attempt.objects.filter(delivery__click__campaign_id=campaign)

    def q(base: str, **params: object) -> str:
        return base + ("?" + urlencode(params) if params else "")

    # Page 1000, or the deepest page a small run has.
    deep = max(1, min(1000, Delivery.objects.count() // 100))
    a = "/admin/postbacks/attempt/"
    d = "/admin/postbacks/delivery/"
    started = {
        "started_at__range__gte_0": day.isoformat(),
        "started_at__range__gte_1": "00:00:00",
        "started_at__range__lte_0": day.isoformat(),
        "started_at__range__lte_1": "23:59:59",
    }
    return [
        ("attempts: first page", a),
        ("attempts: outcome failed", q(a, outcome__exact="failed")),
        ("attempts: HTTP 4xx", q(a, http="4xx")),
        ("attempts: HTTP 3xx", q(a, http="3xx")),
        ("attempts: no response", q(a, http="none")),
        ("attempts: slow (> 1 s)", q(a, slow="1")),
        ("attempts: rule", q(a, rule=rule)),
        ("attempts: rare rule (0.1 %)", q(a, rule=rare)),
        ("attempts: traffic source", q(a, source=source)),
        ("attempts: offer", q(a, offer=offer)),
        ("attempts: campaign", q(a, campaign=campaign)),
        ("attempts: one day (date range)", q(a, **started)),
        ("attempts: rule + failed + 5xx", q(a, rule=rule, outcome__exact="failed", http="5xx")),
        ("attempts: search click ID", q(a, q=str(sample.click_id))),
        ("attempts: search external ID", q(a, q=sample.click.external_id)),
        ("attempts: search txid", q(a, q=sample.conversion.txid)),
        ("attempts: search, no match", q(a, q="no-such-id")),
        (f"attempts: page {deep}", q(a, p=deep)),
        (
            f"attempts: page {deep} by Next (keyset)",
            q(a, p=deep, c=next_cursor(Attempt.objects, "started_at", deep)),
        ),
        (f"attempts: campaign, page {deep}", q(a, campaign=campaign, p=deep)),
        (
            f"attempts: campaign, page {deep} by Next",
            q(
                a,
                campaign=campaign,
                p=deep,
                c=next_cursor(attempts_by_campaign, "started_at", deep),
            ),
        ),
        (f"attempts: page {deep // 2} of retried", q(a, outcome__exact="retry", p=deep // 2)),
        ("deliveries: first page", d),
        ("deliveries: status failed", q(d, status__exact="failed")),
        ("deliveries: status scheduled", q(d, status__exact="scheduled")),
        ("deliveries: last HTTP 4xx", q(d, http="4xx")),
        ("deliveries: last HTTP 3xx", q(d, http="3xx")),
        ("deliveries: rule", q(d, rule=rule)),
        ("deliveries: rare rule (0.1 %)", q(d, rule=rare)),
        ("deliveries: traffic source", q(d, source=source)),
        ("deliveries: offer", q(d, offer=offer)),
        ("deliveries: campaign", q(d, campaign=campaign)),
        (
            "deliveries: one day (date range)",
            q(d, created_at__range__gte=day.isoformat(), created_at__range__lte=day.isoformat()),
        ),
        ("deliveries: search click ID", q(d, q=str(sample.click_id))),
        ("deliveries: search external ID", q(d, q=sample.click.external_id)),
        ("deliveries: search txid", q(d, q=sample.conversion.txid)),
        (f"deliveries: page {deep}", q(d, p=deep)),
        (f"deliveries: rule, page {deep}", q(d, rule=rule, p=deep)),
        (
            f"deliveries: rule, page {deep} by Next",
            q(
                d,
                rule=rule,
                p=deep,
                c=next_cursor(Delivery.objects.filter(rule_id=rule), "created_at", deep),
            ),
        ),
        ("admin index (dashboard), uncached", "/admin/?nocache"),
        ("admin index (dashboard), cached", "/admin/"),
        (
            "CSV export, 10,000 attempts",
            q(
                a + "export.csv",
                **{
                    "started_at__range__gte_0": ten_k.date().isoformat(),
                    "started_at__range__gte_1": ten_k.time().isoformat(timespec="seconds"),
                },
            ),
        ),
    ]


def measure(repeat: int) -> list[tuple[str, float, float, int]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from postbacks import dashboard
    from postbacks.models import Attempt

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    print(f"{Attempt.objects.order_by().values('pk').count():,} attempts", flush=True)
    rows = []
    for label, url in pages():
        before = None
        if url.endswith("?nocache"):
            # The dashboard's own queries: its 60 s cache dropped before every request.
            url, before = url.removesuffix("?nocache"), dashboard.clear_cache
        ms, sql_ms, queries = timed(client, url, repeat, before)
        rows.append((label, ms, sql_ms, queries))
        flag = "" if ms < TARGET_MS else "  OVER"
        print(
            f"{label:<40} {ms:7.1f} ms (SQL {sql_ms:6.1f}) {queries:3d} queries{flag}", flush=True
        )
    return rows


def print_table(rows: list[tuple[str, float, float, int]]) -> None:
    print()
    print("| page | median ms | of which SQL | queries | < 300 ms |")
    print("|---|---|---|---|---|")
    for label, ms, sql_ms, queries in rows:
        ok = "yes" if ms < TARGET_MS else "**no**"
        print(f"| {label} | {ms:.0f} | {sql_ms:.1f} | {queries} | {ok} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=2_000_000)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page")
    parser.add_argument("--rebuild", action="store_true", help="build the data anew")
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args()
    setup_django(args.database_url)
    ensure_data(args.attempts, args.rebuild)
    if not args.build_only:
        print_table(measure(args.repeat))


if __name__ == "__main__":
    main()
