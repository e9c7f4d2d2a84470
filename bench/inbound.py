"""Inbound benchmark: /c and /cv against a hello-world view and naive click and /cv views.

All of them run on one server configuration: gunicorn with sync workers (``2 x cores + 1``
workers, gunicorn's documented starting point; ``--workers`` to change), PostgreSQL, the
Redis broker (no Celery worker: /cv writes its deliveries and publishes their wake-ups,
which stay queued). Load comes from ``wrk`` (``apt-get install wrk``) in its own process;
/cv gets a fresh click ID per request (pre-written clicks, one conversion rule; the warm-up
uses other click IDs), then "/cv (repeats)" sends the same click IDs again without warm-up:
duplicates, answered from the existing conversion (any request beyond the first run's IDs is
a fresh conversion; the outcome counts say how many). The naive /cv view
(``bench/inbound_urls.py``: one ORM SELECT of the click, then the conversion, delivery and
inbound-log INSERTs in one transaction) gets fresh click IDs of its own, and runs just
before /cv; ``--cv-rounds N`` alternates the two N times (each round on fresh IDs).
``--no-wake`` (``BENCH_WAKE=0``) makes the server's dispatcher wake-up publish a no-op, to
measure /cv without it.

Visitors: by default wrk sends no User-Agent, Accept-Language or Referer and every request
comes from 127.0.0.1 (no geo). ``--visitors fixtures`` sends, to hello, naive and /c alike,
the user agents of ``tracker/fixtures/user_agents.txt`` and the addresses of
``tracker/fixtures/ips.txt`` in turn (as ``X-Forwarded-For``, with ``TRACKER_PROXY_COUNT=1``),
plus an Accept-Language and a Referer: real traffic, where enrichment's per-process caches
hit. ``--visitors unique`` makes every user agent distinct (a counter appended) and every
address a random public IPv4 one: the uncached worst case.

Printed per endpoint: requests/s, p50 and p99 latency, non-2xx/3xx answers, the ratio to the
naive click view (for /cv: to the naive /cv view of the same round); for /c also "clicks
written = clicks answered" from an exact run of ``--exact`` requests (wrk stops mid-flight,
so its own count can be short by up to ``--connections``). Never run by the test suite.

    .venv/bin/python bench/inbound.py [--duration 10] [--connections 16] [--workers N]
        [--exact 2000] [--port 8765] [--visitors none|fixtures|unique] [--no-cv]
        [--cv-rounds 1] [--no-wake] [--cv-only]

Defaults: ``postgres://postgres@127.0.0.1:5432/postbacks_bench_inbound`` (created and
migrated if missing; ``DATABASE_URL`` overrides), ``redis://127.0.0.1:6379/10`` (flushed
before and after; ``REDIS_URL`` overrides).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postbacks_bench_inbound"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
SETTINGS = "bench.inbound_settings"
CLICK_TARGET_P99_MS = 25.0
CLICK_TARGET_HELLO = 0.6  # /c against the hello-world view on the same server
CONVERSION_TARGET_RPS = 500.0
CONVERSION_TARGET_NAIVE = 0.8  # /cv >= 80 % of the naive /cv view
WARMUP_SECONDS = 5  # also lets each worker load what it loads on first use
CV_LUA = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local counter = 0
local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
function init(args)
  -- The warm-up ("warmup") and the measured run ("run") take disjoint halves of the IDs, so
  -- the measured run never repeats a warm-up click ID (a duplicate, not a fresh conversion).
  local half = math.floor(#ids / 2)
  local base = 0
  if args[1] == "run" then base = half end
  counter = base + tonumber(first) * math.floor(half / %(threads)d)
end
function request()
  counter = counter + 1
  local id = ids[(counter %% #ids) + 1]
  return wrk.format("GET", "%(path)s?click_id=" .. id .. "&payout=1.50&txid=T&status=approved")
end
"""
# Visitors for hello, naive and /c: the fixture user agents and IPs in turn (``unique``: each
# user agent made distinct, each IP a random public IPv4 address).
VISIT_LUA = """
local uas, ips = {}, {}
for line in io.lines("%(uas)s") do uas[#uas + 1] = line end
for line in io.lines("%(ips)s") do ips[#ips + 1] = line end
local unique = %(unique)s
local counter = 0
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  math.randomseed(1000 + tonumber(id))
end
function request()
  counter = counter + 1
  local ua = uas[(counter %% #uas) + 1]
  local ip = ips[(counter %% #ips) + 1]
  if unique then
    ua = ua .. " b" .. id .. "-" .. counter
    ip = math.random(1, 223) .. "." .. math.random(0, 255) .. "." .. math.random(0, 255)
      .. "." .. math.random(1, 254)
  end
  return wrk.format("GET", nil, {
    ["User-Agent"] = ua,
    ["X-Forwarded-For"] = ip,
    ["Accept-Language"] = "en-GB,en;q=0.9,de;q=0.5",
    ["Referer"] = "https://news.example/article?id=" .. (counter %% 97),
  })
end
"""


@dataclass
class Figures:
    name: str
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    bad: int
    socket_errors: str
    web_cpu_ms: float = 0.0  # CPU of the gunicorn workers per answered request
    db_cpu_ms: float = 0.0  # CPU of the database's PostgreSQL backends per answered request

    @property
    def cpu_ms(self) -> float:
        return self.web_cpu_ms + self.db_cpu_ms


TICKS = os.sysconf("SC_CLK_TCK")
# Who measures the CPU of the runs: the gunicorn master (set by main) and the database name.
measured: dict[str, object] = {}


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_snapshot() -> tuple[dict[int, float], dict[int, float]]:
    """CPU seconds so far of each gunicorn worker and of each PostgreSQL backend connected to
    the bench's database, by pid (Linux ``/proc``; empty elsewhere)."""
    master = measured.get("server")
    web: dict[int, float] = {}
    if master is not None:
        children = Path(f"/proc/{master}/task/{master}/children")
        with contextlib.suppress(OSError):
            web = {int(pid): _cpu(int(pid)) for pid in children.read_text().split()}
    db: dict[int, float] = {}
    marker = f" {measured.get('database')} ".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                title = (entry / "cmdline").read_bytes()
                if title.startswith(b"postgres: ") and marker in title:
                    db[int(entry.name)] = _cpu(int(entry.name))
    return web, db


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two snapshots (processes started meanwhile count whole)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per endpoint")
    parser.add_argument("--connections", type=int, default=0, help="default: 2 x workers")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--exact", type=int, default=2000, help="/c requests of the exact run")
    parser.add_argument(
        "--clicks", type=int, default=80_000, help="clicks written for /cv and naive /cv"
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--visitors",
        choices=("none", "fixtures", "unique"),
        default="none",
        help="headers and IPs of hello, naive and /c (see the module docstring)",
    )
    parser.add_argument("--no-cv", action="store_true", help="skip the /cv runs")
    parser.add_argument(
        "--cv-only", action="store_true", help="skip hello, naive click and /c (no click target)"
    )
    parser.add_argument(
        "--cv-rounds", type=int, default=1, help="naive /cv then /cv, this many times"
    )
    parser.add_argument(
        "--no-wake", action="store_true", help="no dispatcher wake-up publish (BENCH_WAKE=0)"
    )
    parser.add_argument(
        "--no-click-buffer",
        action="store_true",
        help="/c writes each click itself (TRACKER_CLICK_BUFFER_REDIS_URL empty)",
    )
    return parser.parse_args(argv)


def fixture_lines(name: str) -> list[str]:
    text = (ROOT / "tracker" / "fixtures" / name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def visit_script(args: argparse.Namespace, workdir: Path) -> Path | None:
    """The wrk script sending the chosen visitors, or None for wrk's bare requests."""
    if args.visitors == "none":
        return None
    paths = {}
    for name in ("user_agents", "ips"):
        paths[name] = workdir / f"{name}.txt"
        paths[name].write_text("\n".join(fixture_lines(f"{name}.txt")) + "\n")
    script = workdir / "visit.lua"
    unique = "true" if args.visitors == "unique" else "false"
    script.write_text(VISIT_LUA % {"uas": paths["user_agents"], "ips": paths["ips"],
                                   "unique": unique})  # fmt: skip
    return script


def environment(args: argparse.Namespace) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        "REDIS_URL": os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        "CELERY_BROKER_URL": os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DEBUG": "false",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-inbound-not-secret-" + "x" * 40),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
    if args.visitors != "none":
        env["TRACKER_PROXY_COUNT"] = "1"  # the visitor's address from X-Forwarded-For
    if args.no_click_buffer:
        env["TRACKER_CLICK_BUFFER_REDIS_URL"] = ""  # /c writes each click itself
    if args.no_wake:
        env["BENCH_WAKE"] = "0"
    os.environ.update(env)
    return env


def database_ready() -> None:
    """Create the benchmark database if missing, then migrate it."""
    import django
    import psycopg
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    db = settings.DATABASES["default"]
    admin = psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"],
        dbname="postgres", autocommit=True,
    )  # fmt: skip
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
        if exists.fetchone() is None:
            admin.execute(f'CREATE DATABASE "{db["NAME"]}"')
    call_command("migrate", verbosity=0)


def seed(clicks: int, ids_paths: list[Path]) -> tuple[str, str, str]:
    """One campaign (traffic source, offer, network), one conversion rule, ``clicks`` clicks
    for /cv and naive /cv, their IDs split evenly over the files ``ids_paths``. Returns the
    /c path, the naive click path and the naive /cv path."""
    from django.db import connection

    from campaigns.models import (
        AffiliateNetwork,
        Campaign,
        CampaignOffer,
        Offer,
        TrafficSource,
        TrafficSourceParameter,
    )
    from postbacks.models import EventType, PostbackRule
    from tracker.models import Click

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE tracker_inboundrequest, postbacks_attempt, postbacks_delivery, "
            "tracker_conversion, tracker_click CASCADE"
        )
    PostbackRule.objects.all().delete()
    source, _ = TrafficSource.objects.get_or_create(
        name="Bench source", defaults={"external_id_placeholder": "{click_id}"}
    )
    TrafficSourceParameter.objects.get_or_create(
        traffic_source=source, slot=1, defaults={"name": "site", "param": "site"}
    )
    network, _ = AffiliateNetwork.objects.get_or_create(name="Bench network")
    offer, _ = Offer.objects.get_or_create(
        name="Bench offer",
        defaults={"url": "https://offer.example/?s2={cf_click_id}", "affiliate_network": network},
    )
    campaign, _ = Campaign.objects.get_or_create(
        key="benchinbound", defaults={"name": "Bench", "traffic_source": source}
    )
    CampaignOffer.objects.get_or_create(campaign=campaign, offer=offer)
    rule = PostbackRule.objects.create(
        name="Bench conversion rule",
        event_type=EventType.CONVERSION,
        url_template="http://127.0.0.1:9/postback?c={externalid}&p={payout}",
    )
    rule.traffic_sources.set([source])
    made = [
        Click(campaign=campaign, offer=offer, traffic_source=source, external_id=f"b{i}")
        for i in range(clicks)
    ]
    Click.objects.bulk_create(made, batch_size=5000)
    with connection.cursor() as cursor:
        # Planner statistics for the freshly filled tables, as autovacuum would gather them
        # on a live database within a minute.
        cursor.execute("ANALYZE tracker_click, tracker_conversion")
    share = clicks // len(ids_paths)
    for n, ids_path in enumerate(ids_paths):
        ids = made[n * share : (n + 1) * share]
        ids_path.write_text("\n".join(str(c.pk) for c in ids) + "\n")
    return (
        f"/c/{campaign.key}?external_id=ext-1&site=news.example",
        f"/bench/naive-click/{campaign.pk}/{source.pk}/{offer.pk}?external_id=ext-1",
        f"/bench/naive-cv/{rule.pk}",
    )


def start_server(args: argparse.Namespace, env: dict[str, str]) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"), "tracker.wsgi:application",
        "--workers", str(args.workers), "--worker-class", "sync",
        "--bind", f"127.0.0.1:{args.port}", "--log-level", "warning", "--backlog", "2048",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("gunicorn exited at start")
        try:
            if fetch(args.port, "/bench/hello") == 200:
                return server
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("gunicorn did not answer in 30 s")


def fetch(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    args: argparse.Namespace,
    name: str,
    path: str,
    script: Path | None = None,
    *,
    warm_up: bool = True,
) -> Figures:
    """One wrk run of ``args.duration`` seconds, after a warm-up of WARMUP_SECONDS unless
    ``warm_up`` is False. The script gets "warmup" or "run" as its argument."""
    base = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "--latency"]
    if script is not None:
        base += ["-s", str(script)]
    url = f"http://127.0.0.1:{args.port}{path}"
    run = [url, "--", "run"]
    if warm_up:
        subprocess.run(
            [*base, "-d", f"{WARMUP_SECONDS}s", url, "--", "warmup"],
            capture_output=True,
            check=True,
        )
    web_before, db_before = cpu_snapshot()
    out = subprocess.run(
        [*base, "-d", f"{args.duration}s", *run], capture_output=True, text=True, check=True
    ).stdout
    web_after, db_after = cpu_snapshot()
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if "50" not in latency:
        raise SystemExit(f"wrk printed no latency for {name}:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return Figures(
        name=name,
        requests=requests,
        web_cpu_ms=cpu_used(web_before, web_after) * 1000 / max(requests, 1),
        db_cpu_ms=cpu_used(db_before, db_after) * 1000 / max(requests, 1),
        per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=to_ms(latency["50"]),
        p99_ms=to_ms(latency["99"]),
        bad=int(bad.group(1)) if bad else 0,
        socket_errors=errors.group(1) if errors else "none",
    )


def settled(count: Callable[[], int]) -> int:
    """``count()`` once it stops changing: requests wrk left in flight have finished."""
    last = count()
    while True:
        time.sleep(0.5)
        now = count()
        if now == last:
            return now
        last = now


def stored_clicks() -> int:
    """The clicks in the table, once the click buffer (tracker/clickbuffer.py; on when a
    Redis URL is set) is written out: the workers' writer loop, run here."""
    from tracker import clickbuffer, services
    from tracker.models import Click

    if clickbuffer.enabled():
        writer = clickbuffer.Flusher(services.click_plan)
        while writer.round():
            pass
    return Click.objects.count()


def exact_clicks(args: argparse.Namespace, path: str) -> tuple[int, int]:
    """Send exactly ``args.exact`` clicks over ``args.connections`` threads; returns
    (answered 302, written rows)."""
    before = settled(stored_clicks)
    with ThreadPoolExecutor(args.connections) as pool:
        statuses = list(pool.map(lambda _: fetch(args.port, path), range(args.exact)))
    return statuses.count(302), settled(stored_clicks) - before


def enrichment_counts() -> dict[str, int]:
    """Of the clicks /c wrote (the only ones with var1 ``site`` set), how many got a country,
    an OS, a device type, a browser, the bot flag."""
    from django.db.models import Count, Q

    from tracker.models import Click

    visits = Click.objects.filter(var1="news.example")
    return visits.aggregate(
        clicks=Count("pk"),
        country=Count("pk", filter=~Q(country_code="")),
        os=Count("pk", filter=~Q(os="")),
        device=Count("pk", filter=~Q(device_type="")),
        browser=Count("pk", filter=~Q(browser="")),
        bot=Count("pk", filter=Q(is_bot=True)),
    )


def cv_script(workdir: Path, name: str, ids: Path, path: str, threads: int) -> Path:
    script = workdir / f"{name}.lua"
    script.write_text(CV_LUA % {"ids": ids, "threads": threads, "path": path})
    return script


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.connections = args.connections or 2 * args.workers
    env = environment(args)
    import redis

    broker = redis.Redis.from_url(env["REDIS_URL"])
    broker.flushdb()
    database_ready()
    from django.db.models import Count

    from postbacks.models import Delivery
    from tracker.models import Click, Conversion, InboundRequest

    workdir = Path(tempfile.mkdtemp(prefix="bench-inbound-"))
    rounds = 0 if args.no_cv else args.cv_rounds
    ids_paths = [workdir / f"click_ids_{n}.txt" for n in range(max(1, 2 * rounds))]
    click_path, naive_path, naive_cv_path = seed(args.clicks, ids_paths)
    scripts = [
        (
            cv_script(workdir, f"naive_cv_{n}", ids_paths[2 * n], naive_cv_path, args.threads),
            cv_script(workdir, f"cv_{n}", ids_paths[2 * n + 1], "/cv", args.threads),
        )
        for n in range(rounds)
    ]
    visitors = visit_script(args, workdir)
    print(
        f"gunicorn {args.workers} sync workers ({os.cpu_count()} cores), wrk {args.threads} "
        f"threads x {args.connections} connections, {args.duration} s per endpoint "
        f"after {WARMUP_SECONDS} s warm-up; visitors: {args.visitors}; "
        f"wake-up publish: {'off' if args.no_wake else 'on'}"
    )
    server = start_server(args, env)
    from django.conf import settings

    measured.update(server=server.pid, database=settings.DATABASES["default"]["NAME"])
    results: list[Figures] = []
    clicks_run = not args.cv_only
    cv_pairs: list[tuple[Figures, Figures]] = []
    try:
        if clicks_run:
            results.append(wrk(args, "hello world", "/bench/hello", visitors))
            before = Click.objects.count()
            results.append(wrk(args, "naive click (1 INSERT)", naive_path, visitors))
            naive_written = settled(Click.objects.count) - before
            before = settled(stored_clicks)
            results.append(wrk(args, "/c", click_path, visitors))
            click_written = settled(stored_clicks) - before
            answered, written = exact_clicks(args, click_path)
            enriched = enrichment_counts()
        conversions = 0
        conversions_before = Conversion.objects.count()
        for n, (naive_script, script) in enumerate(scripts):
            suffix = f" #{n + 1}" if rounds > 1 else ""
            naive_cv = wrk(args, f"naive /cv{suffix}", naive_cv_path, naive_script)
            conversions_before = settled(Conversion.objects.count)
            cv = wrk(args, f"/cv (fresh click IDs){suffix}", "/cv", script)
            conversions += settled(Conversion.objects.count) - conversions_before
            cv_pairs.append((naive_cv, cv))
            results += [naive_cv, cv]
        if scripts:
            # The same click IDs again: every request a duplicate (networks retry postbacks).
            results.append(wrk(args, "/cv (repeats)", "/cv", scripts[-1][1], warm_up=False))
        deliveries = Delivery.objects.filter(rule__name="Bench conversion rule").count()
        logged = InboundRequest.objects.filter(endpoint="/cv").count()
        outcomes = dict(
            InboundRequest.objects.filter(endpoint="/cv")
            .values_list("outcome")
            .annotate(n=Count("pk"))
            .order_by()
        )
        queued = broker.llen("postbacks")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
        broker.flushdb()
        shutil.rmtree(workdir, ignore_errors=True)

    naive = results[1] if clicks_run else None
    reference = {id(cv): naive_cv for naive_cv, cv in cv_pairs}
    print(f"\n{'endpoint':24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx/3xx':>12} "
          f"{'vs naive':>9} {'web CPU':>8} {'db CPU':>7} {'CPU: naive/it':>14}")  # fmt: skip
    for row in results:
        base = reference.get(id(row), naive)
        ratio = f"{row.per_second / base.per_second:9.0%}" if base is not None else " " * 9
        cpu = f"{base.cpu_ms / row.cpu_ms:14.0%}" if base is not None and row.cpu_ms else ""
        print(
            f"{row.name:24} {row.per_second:8.0f} {row.p50_ms:8.2f} {row.p99_ms:8.2f} "
            f"{row.bad:12d} {ratio} {row.web_cpu_ms:8.2f} {row.db_cpu_ms:7.2f} {cpu}"
        )
    print("\n(vs naive: /cv against the naive /cv view of its round, the rest against the "
          "naive click. web CPU: the gunicorn workers', db CPU: the database's PostgreSQL "
          "backends', in ms per answered request; CPU naive/it: the naive view's CPU per "
          "request over this one's, the throughput ratio the CPU alone predicts on a machine "
          "shared with other work)")  # fmt: skip
    print("socket errors: " + "; ".join(f"{r.name}: {r.socket_errors}" for r in results))
    targets = []
    if clicks_run:
        click = results[2]
        print(f"naive click: {naive.requests} answered, {naive_written} written (wrk window)")
        print(f"/c: {click.requests} answered, {click_written} written (wrk window)")
        print(f"/c exact run: {answered} answered 302, {written} clicks written: "
              f"{'equal' if answered == written == args.exact else 'MISMATCH'}")  # fmt: skip
        print(
            "/c clicks enriched (wrk window and exact run): "
            + ", ".join(f"{k} {v}" for k, v in enriched.items())
        )
        hello = results[0]
        targets.append(
            f"/c >= {CLICK_TARGET_HELLO:.0%} of hello world: "
            f"{click.per_second >= CLICK_TARGET_HELLO * hello.per_second} "
            f"({click.per_second / hello.per_second:.0%}; by CPU per request: "
            f"{hello.cpu_ms / click.cpu_ms if click.cpu_ms else 0:.0%})"
        )
        targets.append(
            f"/c >= 2x naive: {click.per_second >= 2 * naive.per_second} "
            f"({click.per_second / naive.per_second:.0%}); /c p99 < "
            f"{CLICK_TARGET_P99_MS:.0f} ms: {click.p99_ms < CLICK_TARGET_P99_MS} "
            f"({click.p99_ms:.1f})"
        )
    if cv_pairs:
        cv_requests = sum(cv.requests for _, cv in cv_pairs)
        print(
            f"/cv: {cv_requests} answered, {conversions} conversions written, "
            f"{deliveries} deliveries of the rule (both views), {logged} /cv inbound-log rows, "
            f"{queued} wake-ups queued"
        )
        print("/cv inbound-log outcomes (warm-up and all runs): "
              + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))  # fmt: skip
        ratios = [cv.per_second / naive_cv.per_second for naive_cv, cv in cv_pairs]
        cpu_ratios = [naive_cv.cpu_ms / cv.cpu_ms for naive_cv, cv in cv_pairs if cv.cpu_ms]
        best = max(cv.per_second for _, cv in cv_pairs)
        targets.append(
            f"/cv >= {CONVERSION_TARGET_NAIVE:.0%} of naive /cv: "
            f"{min(ratios) >= CONVERSION_TARGET_NAIVE} "
            f"({', '.join(f'{r:.0%}' for r in ratios)}; by CPU per request: "
            f"{', '.join(f'{r:.0%}' for r in cpu_ratios)})"
        )
        targets.append(
            f"/cv >= {CONVERSION_TARGET_RPS:.0f} req/s: {best >= CONVERSION_TARGET_RPS} "
            f"({best:.0f})"
        )
    print("\ntargets: " + "; ".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
