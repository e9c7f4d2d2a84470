"""REST API list and filter calls at scale: time each against 2 million attempts.

    .venv/bin/python bench/api.py                    # 2,000,000 attempts, 20 timed calls each
    .venv/bin/python bench/api.py --attempts 200000  # smaller
    .venv/bin/python bench/api.py --rebuild          # drop the data and build anew
    .venv/bin/python bench/api.py --explain-all      # EXPLAIN ANALYZE every call's slowest query

Own database (``--database-url``, default
``postgres://postgres@127.0.0.1:5432/postbacks_bench_api``), created and migrated if missing;
the data is the one ``bench/admin_pages.py`` builds (its ``setup_django`` and
``ensure_data``: kept and reused by a later run with the same ``--attempts``). No Redis: the
throttle counts in the process's local-memory cache, its rate raised so that it never answers
429 here. A superuser's API token (``Authorization: Token ...``) and the Django test client
in process (no HTTP server; the ORM, DRF, filters, pagination and JSON rendering are all
timed) call each URL once to warm up, then ``--repeat`` times: median and p95 in ms, the SQL
time and the number of queries; then the same for the second page, reached through the
first page's ``next`` cursor. The target is < 100 ms per call. For every call over it, the
EXPLAIN (ANALYZE, BUFFERS) of its slowest SQL query is printed after the table.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.admin_pages import LABELS, RARE_RULE, ensure_data, setup_django  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/postbacks_bench_api"
TARGET_MS = 100


@dataclass
class Timing:
    median: float
    p95: float
    sql: float  # median SQL ms
    queries: int
    rows: int
    next_url: str | None
    slowest_sql: str = ""
    times: list[float] = field(default_factory=list)


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def timed(client, url: str, repeat: int) -> Timing:
    """One warm-up GET of ``url``, then ``repeat`` timed ones (response rendered and read)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    data = response.json()
    times, sql_times, queries, slowest = [], [], 0, (0.0, "")
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            t0 = time.perf_counter()
            response = client.get(url)
            body = response.content
            times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (url, response.status_code)
        assert body
        sql_times.append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
        queries = len(captured)
        for q in captured.captured_queries:
            if float(q["time"]) > slowest[0]:
                slowest = (float(q["time"]), q["sql"])
    return Timing(
        median=statistics.median(times),
        p95=p95(times),
        sql=statistics.median(sql_times),
        queries=queries,
        rows=len(data["results"]),
        next_url=data.get("next"),
        slowest_sql=slowest[1],
        times=times,
    )


def calls() -> list[tuple[str, str]]:
    """(label, URL) of every call to time, with filter values from the bench data."""
    from django.db.models import Max

    from campaigns.models import Campaign, Offer, TrafficSource
    from postbacks.models import Delivery, PostbackRule

    label = LABELS[3]
    source = TrafficSource.objects.get(name=f"{label} source").pk
    offer = Offer.objects.get(name=f"{label} offer").pk
    campaign = Campaign.objects.get(name=f"{label} campaign").pk
    rule = PostbackRule.objects.get(name=f"{label} postback").pk
    rare = PostbackRule.objects.get(name=RARE_RULE).pk
    newest = Delivery.objects.filter(idempotency_key__startswith="bench:").aggregate(
        Max("created_at")
    )["created_at__max"]
    # One day a week back (about 1/30 of the rows), and the last hour.
    day = (newest - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    one_day = {"created_after": day.isoformat(), "created_before": (day + timedelta(1)).isoformat()}
    last_hour = {"created_after": (newest - timedelta(hours=1)).isoformat()}
    # A middle delivery with attempts, a click and a conversion, looked up three ways.
    sample = (
        Delivery.objects.filter(idempotency_key="bench:" + str(Delivery.objects.count() // 2))
        .select_related("click", "conversion")
        .get()
    )
    by_id = {
        "click_id": str(sample.click_id),
        "external_id": sample.click.external_id,
        "txid": sample.conversion.txid,
    }

    def q(base: str, **params: object) -> str:
        return base + ("?" + urlencode(params, doseq=True) if params else "")

    d = "/api/v1/deliveries/"
    a = "/api/v1/attempts/"
    c = "/api/v1/clicks/"
    v = "/api/v1/conversions/"
    rows = [
        ("deliveries: first page", d),
        ("deliveries: created, last hour", q(d, **last_hour)),
        ("deliveries: created, one day", q(d, **one_day)),
        ("deliveries: rule", q(d, rule=rule)),
        ("deliveries: rare rule (0.1 %)", q(d, rule=rare)),
        ("deliveries: traffic_source", q(d, traffic_source=source)),
        ("deliveries: offer", q(d, offer=offer)),
        ("deliveries: campaign", q(d, campaign=campaign)),
        ("deliveries: status failed", q(d, status="failed")),
        ("deliveries: status scheduled", q(d, status="scheduled")),
        ("deliveries: status failed + cancelled", q(d, status=["failed", "cancelled"])),
        ("deliveries: event_type", q(d, event_type="conversion")),
        ("deliveries: kind", q(d, kind="s2s")),
        ("deliveries: http 5xx", q(d, http="5xx")),
        ("deliveries: http 3xx (none)", q(d, http="3xx")),
        ("deliveries: http none", q(d, http="none")),
        ("deliveries: last_status_code 404", q(d, last_status_code=404)),
        ("deliveries: is_test true (none)", q(d, is_test="true")),
        ("deliveries: click_id", q(d, click_id=by_id["click_id"])),
        ("deliveries: external_id", q(d, external_id=by_id["external_id"])),
        ("deliveries: txid", q(d, txid=by_id["txid"])),
        ("deliveries: rule + failed + 5xx", q(d, rule=rule, status="failed", http="5xx")),
        ("deliveries: campaign + one day", q(d, campaign=campaign, **one_day)),
        ("attempts: first page", a),
        ("attempts: created, last hour", q(a, **last_hour)),
        ("attempts: created, one day", q(a, **one_day)),
        ("attempts: delivery", q(a, delivery=sample.pk)),
        ("attempts: rule", q(a, rule=rule)),
        ("attempts: rare rule (0.1 %)", q(a, rule=rare)),
        ("attempts: traffic_source", q(a, traffic_source=source)),
        ("attempts: offer", q(a, offer=offer)),
        ("attempts: campaign", q(a, campaign=campaign)),
        ("attempts: outcome failed", q(a, outcome="failed")),
        ("attempts: outcome retry", q(a, outcome="retry")),
        ("attempts: status_code 404", q(a, status_code=404)),
        ("attempts: status_code 301", q(a, status_code=301)),
        ("attempts: http 4xx", q(a, http="4xx")),
        ("attempts: http 3xx", q(a, http="3xx")),
        ("attempts: http none", q(a, http="none")),
        ("attempts: slow true", q(a, slow="true")),
        ("attempts: event_type", q(a, event_type="conversion")),
        ("attempts: click_id", q(a, click_id=by_id["click_id"])),
        ("attempts: external_id", q(a, external_id=by_id["external_id"])),
        ("attempts: txid", q(a, txid=by_id["txid"])),
        ("attempts: rule + failed + 5xx", q(a, rule=rule, outcome="failed", http="5xx")),
        ("attempts: campaign + one day", q(a, campaign=campaign, **one_day)),
        ("clicks: first page", c),
        ("clicks: campaign", q(c, campaign=campaign)),
        ("clicks: created, one day", q(c, **one_day)),
        ("clicks: external_id", q(c, external_id=by_id["external_id"])),
        ("conversions: first page", v),
        ("conversions: campaign", q(v, campaign=campaign)),
        ("conversions: created, one day", q(v, **one_day)),
        ("conversions: txid", q(v, txid=by_id["txid"])),
        ("inbound-requests: first page", "/api/v1/inbound-requests/"),
    ]
    return rows


def path_of(url: str) -> str:
    """The path and query of an absolute ``next`` link, for the test client."""
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


def short(text: str, width: int = 160) -> str:
    """``text`` with the SELECT list elided and every line cut to ``width`` characters."""
    text = re.sub(r"^SELECT (DISTINCT )?.*? FROM ", r"SELECT \1... FROM ", text, count=1)
    return "\n".join(
        line if len(line) <= width else line[: width - 3] + "..." for line in text.splitlines()
    )


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def measure(repeat: int) -> list[tuple[str, Timing, Timing | None]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from postbacks.models import Attempt
    from tracker.models import APIToken

    user, _ = get_user_model().objects.get_or_create(
        username="bench-api", defaults={"is_staff": True, "is_superuser": True}
    )
    APIToken.objects.filter(name="bench-api").delete()
    _, key = APIToken.objects.create_key(name="bench-api", user=user)
    client = Client(headers={"authorization": f"Token {key}", "accept": "application/json"})
    print(f"{Attempt.objects.order_by().values('pk').count():,} attempts", flush=True)
    rows = []
    for label, url in calls():
        first = timed(client, url, repeat)
        second = timed(client, path_of(first.next_url), repeat) if first.next_url else None
        rows.append((label, first, second))
        over = first.median >= TARGET_MS or (second is not None and second.median >= TARGET_MS)
        page2 = f"{second.median:7.1f} / {second.p95:7.1f}" if second else "      - /       -"
        print(
            f"{label:<40} p1 {first.median:7.1f} / {first.p95:7.1f} ms "
            f"(SQL {first.sql:6.1f}, {first.queries} q, {first.rows:2d} rows)  "
            f"p2 {page2} ms{'  OVER' if over else ''}",
            flush=True,
        )
    return rows


def fmt(t: Timing | None) -> tuple[str, str, str]:
    if t is None:
        return "—", "—", "—"
    return f"{t.median:.0f}", f"{t.p95:.0f}", f"{t.sql:.1f}"


def print_table(rows: list[tuple[str, Timing, Timing | None]], explain_all: bool) -> None:
    print()
    print(
        "| call | rows | median ms | p95 ms | SQL ms | queries "
        "| page 2 median | page 2 p95 | page 2 SQL | < 100 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, first, second in rows:
        worst = max(first.median, second.median if second else 0)
        ok = "yes" if worst < TARGET_MS else "**no**"
        m1, p1, s1 = fmt(first)
        m2, p2, s2 = fmt(second)
        print(
            f"| {label} | {first.rows} | {m1} | {p1} | {s1} | {first.queries} "
            f"| {m2} | {p2} | {s2} | {ok} |"
        )
    for label, first, second in rows:
        for page, t in (("page 1", first), ("page 2", second)):
            if t is None or not t.slowest_sql:
                continue
            if not explain_all and t.median < TARGET_MS:
                continue
            print(f"\n--- {label}, {page}: {t.median:.0f} ms, slowest query:")
            print(short(t.slowest_sql))
            print(short(explain(t.slowest_sql)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=2_000_000)
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per URL")
    parser.add_argument("--rebuild", action="store_true", help="build the data anew")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--explain-all", action="store_true", help="EXPLAIN every call, not only the slow ones"
    )
    args = parser.parse_args()
    # Production-like settings (DEBUG off); no Redis, and a throttle that never refuses.
    os.environ["DEBUG"] = "false"
    os.environ["REDIS_URL"] = ""
    os.environ["API_THROTTLE_RATE"] = "1000000/min"
    os.environ.setdefault("SECRET_KEY", "bench-api")
    os.environ.setdefault("VAR_DIR", str(ROOT / "var" / "bench-api"))
    setup_django(args.database_url)
    ensure_data(args.attempts, args.rebuild)
    if not args.build_only:
        print_table(measure(args.repeat), args.explain_all)


if __name__ == "__main__":
    main()
