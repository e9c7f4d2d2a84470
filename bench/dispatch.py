"""Postback dispatch benchmark: postbacks fired per second, three designs side by side.

For each receiver delay (default 0 and 100 ms) one receiver process (``bench/receiver.py``)
is started, N conversions are prepared (one delivery each, queued as the project queues
them), and the designs run one after the other against that same receiver:

* ``ours``: the project's pipeline, ``celery -A tracker worker -Q postbacks,celery``
  (``--workers K`` starts K such processes; pool and concurrency come from the project's
  settings unless ``--pool``/``--concurrency`` are given). Measured from the Attempt rows:
  N / (last attempt end - first attempt start), every attempt logged in the database.
* ``ours2``: the same pipeline with twice as many worker commands ("machines") on the same
  backlog (the deliveries are put back to scheduled, one wake-up published): whether a
  second worker pulls its weight. Each command's CPU seconds are printed.
* ``naive``: ``bench/naive.py``, one Celery task per postback calling ``requests.get(url)``
  and logging one Attempt row, on Celery's default prefork pool (one process per core);
  measured the same way on its first ``--naive-postbacks`` deliveries.
* ``aiohttp``: the ceiling. A raw asyncio ``aiohttp`` client in the bench process with
  ``--in-flight`` (50) requests in flight over keep-alive connections, GETting the same
  delivery URLs (each once, then cycled for at least ``--aiohttp-seconds``), no database
  writes. Measured as requests / (last answer - first request).

It prints one table of all runs and, per delay, ours/naive and ours/aiohttp with the issue's
targets (at 100 ms >= 600 postbacks/s, >= 30x naive and >= 90 % of the ceiling; at 0 ms >= 30 %
of the ceiling; ours2 >= 1.6x ours where the CPU allows). The
"receiver CPU" column is the receiver process's CPU time over the measured window (100 % is
one core busy: then the receiver would be the bottleneck); "sender CPU" is the same for the
worker processes or the aiohttp client. Needs PostgreSQL and Redis (``DATABASE_URL``,
``REDIS_URL``; defaults below); an advisory lock keeps a second benchmark off the database.

    .venv/bin/python bench/dispatch.py [--postbacks 3000] [--delays 0,100]
        [--designs ours,ours2,naive,aiohttp] [--workers 1] [--pool threads] [--concurrency 50]
        [--naive-postbacks 600] [--aiohttp-seconds 5] [--in-flight 50]
        [--receiver aiohttp|threading] [--beat] [--timeout 900] [--settings tracker.settings]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postbacks_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
DESIGNS = ("ours", "ours2", "naive", "aiohttp")
TARGET_DELAY_MS = 100
TARGET_PER_SECOND = 600.0
TARGET_VS_NAIVE = 30.0
TARGET_CEILING_DELAY_MS = 0
TARGET_VS_CEILING = 0.30  # at 0 ms
TARGET_VS_CEILING_SLOW = 0.90  # at 100 ms
TARGET_TWO_WORKERS = 1.6
POLL_SECONDS = 0.2
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1
ADVISORY_LOCK_KEY = 7_300_001
NAIVE_SETTINGS = "bench.naive_settings"
UNFINISHED = ("scheduled", "sending")
POSTBACK_TEMPLATE = "/postback?click-id={externalid}&payout={payout}&txid={txid}"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A run could not complete; the message says why."""


@dataclass
class RunResult:
    """Figures of one run (one design, one receiver delay)."""

    design: str
    delay_ms: int
    postbacks: int
    seconds: float
    per_second: float
    p50_ms: float
    p95_ms: float
    failed: int
    wall_seconds: float
    receiver_cpu: float | None = None  # share of one core over the measured window
    sender_cpu: float | None = None
    per_command_cpu: list[float] | None = None  # CPU seconds of each worker command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Postbacks per second: our pipeline vs naive tasks vs a raw aiohttp loop."
    )
    parser.add_argument("--postbacks", type=int, default=3000, help="postbacks per run")
    parser.add_argument(
        "--delays", default="0,100", help="receiver answer delays in ms, comma-separated"
    )
    parser.add_argument(
        "--designs", default=",".join(DESIGNS), help="designs to run, comma-separated"
    )
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive design")
    parser.add_argument(
        "--workers", type=int, default=1, help="our worker processes (celery worker commands)"
    )
    parser.add_argument("--pool", default=None, help="our worker pool (default: settings)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="our worker concurrency (default: settings)"
    )
    parser.add_argument(
        "--beat", action="store_true", help="also run celery beat (the sweeper) for ours"
    )
    parser.add_argument(
        "--naive-postbacks",
        type=int,
        default=600,
        help="postbacks the naive design sends (at most --postbacks)",
    )
    parser.add_argument(
        "--aiohttp-seconds",
        type=float,
        default=5.0,
        help="the aiohttp loop sends every URL once, then cycles them for at least this long",
    )
    parser.add_argument("--in-flight", type=int, default=50, help="aiohttp requests in flight")
    parser.add_argument(
        "--receiver", choices=("aiohttp", "threading"), default="aiohttp", help="receiver server"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds a run may take before aborting"
    )
    parser.add_argument(
        "--settings",
        default=os.environ.get("DJANGO_SETTINGS_MODULE", "tracker.settings"),
        help="Django settings module for the bench and the workers",
    )
    args = parser.parse_args(argv)
    try:
        args.delays = [int(d) for d in args.delays.split(",") if d.strip()]
    except ValueError:
        parser.error("--delays takes integers (ms), e.g. 0,100")
    args.designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    if args.skip_naive:
        args.designs = [d for d in args.designs if d != "naive"]
    unknown = set(args.designs) - set(DESIGNS)
    if unknown or not args.designs:
        parser.error(f"--designs takes some of {', '.join(DESIGNS)}")
    args.designs = [d for d in DESIGNS if d in args.designs]  # ours first: it plans the rows
    positive = (args.postbacks, args.workers, args.naive_postbacks, args.in_flight)
    if min(positive) < 1 or (args.concurrency is not None and args.concurrency < 1):
        parser.error("counts must be positive")
    if not args.delays:
        parser.error("--delays must name at least one delay")
    args.naive_postbacks = min(args.naive_postbacks, args.postbacks)
    return args


def configure_environment(settings_module: str) -> dict[str, str]:
    """Set the bench defaults in os.environ (kept if already set); returns the env."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    # As in production: DEBUG off (it would record every query), so a key must be set.
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ["POSTBACKS_ALLOW_PRIVATE_NETWORKS"] = "true"
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    return dict(os.environ)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` when it does not exist."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"Created database {name}.")


def setup_django() -> None:
    """Configure Django, make the tracker's Celery app current and migrate."""
    import django
    from django.core.management import call_command

    django.setup()
    from tracker.celery import app

    app.set_default()
    app.set_current()
    call_command("migrate", interactive=False, verbosity=0)


def lock_database() -> None:
    """Hold a session advisory lock: two benchmarks on one database would corrupt both."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise BenchError("Another benchmark is running against this database; try later.")


def check_connection_budget(workers: int, threads: int | None) -> None:
    """Warn when the workers may need more PostgreSQL connections than are free.

    A worker holds at most one connection per thread, or its pool's ``max_size`` if smaller.
    """
    from django.conf import settings
    from django.db import connection

    threads = threads or getattr(settings, "CELERY_WORKER_CONCURRENCY", None) or os.cpu_count()
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    per_worker = min(threads, pool["max_size"]) if isinstance(pool, dict) else threads
    needed = workers * per_worker
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int, count(*) FROM pg_stat_activity"
        )
        limit, used = cursor.fetchone()
    if needed > limit - used:
        print(
            f"Warning: the workers may open {needed} connections but only {limit - used} of "
            f"max_connections={limit} are free; tasks may fail.",
            file=sys.stderr,
        )


def reset_state() -> None:
    """Empty the bench Redis DB and truncate every table the runs write."""
    import redis
    from django.apps import apps
    from django.db import connection

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    tables = [
        model._meta.db_table
        for label in ("campaigns", "tracker", "postbacks")
        for model in apps.get_app_config(label).get_models(include_auto_created=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the bench dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a child in its own process group, tied to the bench's life."""
    return subprocess.Popen(command, start_new_session=True, preexec_fn=die_with_parent, **kwargs)


def stop_process(proc: subprocess.Popen, name: str) -> None:
    """Terminate a process we started, then kill what is left of its group.

    SIGTERM goes to the leader only: a Celery or gunicorn master stops its own children
    (SIGTERM to each pool child would be logged as a lost worker).
    """
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in {STOP_TIMEOUT:.0f} s; killing it.", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, e.g. pool children
    proc.wait()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def group_cpu_seconds(pgids: set[int]) -> float:
    """CPU seconds of every live process in the given process groups (e.g. pool children)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in pgids:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


@dataclass
class ReceiverHandle:
    """A running receiver: its base URL and process."""

    url: str
    proc: subprocess.Popen

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)


@contextmanager
def receiver_process(
    delay_ms: int, server: str = "aiohttp", record: str = ""
) -> Iterator[ReceiverHandle]:
    """Run bench/receiver.py answering 200 after ``delay_ms``; yields its URL and process."""
    command = [sys.executable, str(ROOT / "bench" / "receiver.py")]
    command += ["--delay", str(delay_ms / 1000), "--server", server]
    if record:
        command += ["--record", record]
    proc = spawn(command, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
        url = proc.stdout.readline().strip() if ready else ""
        if not url.startswith("http://"):
            raise BenchError(f"The receiver did not start within {STARTUP_TIMEOUT:.0f} s.")
        yield ReceiverHandle(url, proc)
    finally:
        stop_process(proc, "receiver")


def prepare_conversions(count: int, receiver_url: str) -> None:
    """Register ``count`` conversions, each planning exactly one delivery to the receiver.

    Through the one inbound door (``tracker.ingest.conversion_ingest``, as ``/cv`` calls it):
    it writes the Delivery rows and, after commit, publishes the dispatcher's wake-ups as
    the project does.
    """
    from bench.fixtures import bulk_clicks, campaign_with_rule
    from postbacks.models import Delivery
    from tracker.celery import app
    from tracker.ingest import Inbound, conversion_ingest

    declare_queue(app, "postbacks")
    source, offer, campaign = campaign_with_rule(
        "Bench",
        receiver_url,
        POSTBACK_TEMPLATE,
        Decimal("1.50"),
        max_attempts=1,  # a failed try is final: every run ends, failures are counted
        timeout_seconds=10,
    )
    clicks = bulk_clicks(source, offer, campaign, count, "ext")
    for i, click in enumerate(clicks):
        data = {"click_id": str(click.pk), "payout": "1.50", "currency": "USD", "txid": f"T{i}"}
        answer = conversion_ingest(data, Inbound(endpoint="/cv", http_method="GET"))
        if answer.status != 200:
            raise BenchError(f"Conversion {i} refused: {answer.status} {answer.body}")
    planned = Delivery.objects.count()
    if planned != count:
        raise BenchError(f"Expected {count} deliveries, {planned} were planned.")


def declare_queue(app: Celery, queue: str) -> None:
    """(Re)declare a direct queue and its Redis binding, e.g. after a FLUSHDB.

    Kombu remembers what a pooled connection declared, so without this the first publish
    after a flush could find no binding for the queue.
    """
    from kombu import Exchange, Queue

    with app.connection_for_write() as conn:
        Queue(queue, Exchange(queue), routing_key=queue)(conn.default_channel).declare()


def queue_length(queue: str) -> int:
    """Messages waiting in a Celery queue on the bench Redis DB."""
    import redis

    return int(redis.Redis.from_url(os.environ["REDIS_URL"]).llen(queue))


def requeue_for_naive(count: int) -> None:
    """Empty the Attempt log and queue one naive task for each of the first ``count``
    planned deliveries (the pipeline's queues are purged)."""
    from django.db import connection

    from bench import naive
    from postbacks.models import Delivery
    from tracker.celery import app

    with app.connection_for_write() as conn:
        for queue in ("postbacks", "celery"):
            with contextlib.suppress(Exception):
                conn.default_channel.queue_purge(queue)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE postbacks_attempt RESTART IDENTITY")
    declare_queue(naive.app, naive.QUEUE)
    for pk, url in Delivery.objects.order_by("pk").values_list("pk", "url")[:count]:
        naive.fire.apply_async((pk, url))


@dataclass
class WorkerRun:
    """Wall seconds from the first worker start and the workers' CPU over the busy window
    (in all, and per command)."""

    wall_seconds: float
    busy_seconds: float
    cpu_seconds: float
    per_command: list[float] | None = None


def requeue_for_ours() -> None:
    """Put every planned delivery back to scheduled, due now, with its attempts deleted, and
    publish one wake-up: the same backlog for the next run of the pipeline."""
    from django.db import connection
    from django.utils import timezone

    from postbacks.models import Delivery
    from postbacks.services import wake

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE postbacks_attempt RESTART IDENTITY")
    Delivery.objects.update(
        status=Delivery.Status.SCHEDULED,
        attempt_count=0,
        due_at=timezone.now(),
        delivered_at=None,
        lease_expires_at=None,
        claimed_by="",
        last_error="",
        last_status_code=None,
    )
    wake(coalesce=False)


def run_workers(
    commands: list[list[str]],
    env: dict[str, str],
    finished: Callable[[], int],
    count: int,
    timeout: float,
    log_path: Path,
) -> WorkerRun:
    """Start the worker processes, wait until ``finished()`` reaches ``count``.

    CPU is sampled from the first finished postback to the last (startup left out). Every
    process is stopped on the way out.
    """
    procs: list[subprocess.Popen] = []
    with open(log_path, "w") as log:
        started = time.monotonic()
        first: tuple[float, float] | None = None
        first_each: list[float] = []
        try:
            for command in commands:
                procs.append(
                    spawn(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
            groups = {p.pid for p in procs}
            while True:
                done = finished()
                now = time.monotonic()
                elapsed = now - started
                if done and first is None:
                    first = (now, group_cpu_seconds(groups))
                    first_each = [group_cpu_seconds({p.pid}) for p in procs]
                if done >= count:
                    if first is None or now - first[0] < POLL_SECONDS:
                        return WorkerRun(elapsed, 0.0, 0.0)
                    cpu = group_cpu_seconds(groups) - first[1]
                    each = [
                        group_cpu_seconds({p.pid}) - before
                        for p, before in zip(procs, first_each, strict=True)
                    ]
                    return WorkerRun(elapsed, now - first[0], cpu, each)
                exited = [p.returncode for p in procs if p.poll() is not None]
                if exited:
                    raise BenchError(f"A worker exited with code {exited[0]}; see {log_path}")
                if elapsed > timeout:
                    raise BenchError(
                        f"Timed out after {timeout:.0f} s with {done}/{count} postbacks finished; "
                        f"see {log_path}"
                    )
                time.sleep(POLL_SECONDS)
        finally:
            for proc in procs:
                stop_process(proc, "worker")


def attempt_figures() -> tuple[int, float, float, float, int]:
    """From the Attempt rows: count, window seconds, p50 ms, p95 ms, tries not delivered."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*),
                   extract(epoch FROM max(started_at + duration_ms * interval '1 millisecond')
                                      - min(started_at)),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms),
                   count(*) FILTER (WHERE outcome <> 'delivered')
            FROM postbacks_attempt
            """
        )
        count, window, p50, p95, not_delivered = cursor.fetchone()
    return int(count), float(window or 0), float(p50 or 0), float(p95 or 0), int(not_delivered)


def worker_commands(
    design: str,
    workers: int = 1,
    pool: str | None = None,
    concurrency: int | None = None,
    beat: bool = False,
) -> tuple[str, list[list[str]]]:
    """The queue a design consumes and the command line of each of its processes.

    Ours: ``celery -A tracker worker -Q postbacks,celery`` per worker process, with
    ``-P``/``-c`` only when given (otherwise the project's settings decide), plus
    ``celery beat`` when ``beat`` is set.
    """
    celery = [sys.executable, "-m", "celery"]
    options = ["--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if design == "naive":
        from bench import naive

        # Celery's defaults: prefork pool, one child process per core.
        return naive.QUEUE, [[*celery, "-A", "bench.naive", "worker", "-Q", naive.QUEUE, *options]]
    ours = ["-A", "tracker", "worker", "-Q", "postbacks,celery"]
    if pool:
        ours += ["-P", pool]
    if concurrency:
        ours += ["-c", str(concurrency)]
    commands = [[*celery, *ours, "-n", f"b{i}@%h", *options] for i in range(workers)]
    if beat:
        schedule = Path(tempfile.gettempdir()) / "bench-beat-schedule"
        commands.append([*celery, "-A", "tracker", "beat", "-s", str(schedule), "-l", "WARNING"])
    return "postbacks", commands


def delivery_urls(count: int, receiver_url: str) -> list[str]:
    """The planned deliveries' URLs, or ``count`` URLs of the same shape if none are planned."""
    from postbacks.models import Delivery

    urls = list(Delivery.objects.order_by("pk").values_list("url", flat=True)[:count])
    if len(urls) == count:
        return urls
    return [
        receiver_url + POSTBACK_TEMPLATE.format(externalid=f"ext-{i}", payout="1.5", txid=f"T{i}")
        for i in range(count)
    ]


async def aiohttp_loop(
    urls: list[str], min_seconds: float, in_flight: int
) -> tuple[float, list[float]]:
    """GET every URL once, then cycle through them again until ``min_seconds`` have passed.

    ``in_flight`` lanes each send one request at a time over their keep-alive connection.
    Returns the seconds from the first request to the last answer and one duration in
    seconds per request (negative for a failed one).
    """
    import aiohttp

    next_index = 0
    durations: list[float] = []
    connector = aiohttp.TCPConnector(limit=in_flight)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        first = time.perf_counter()
        until = first + min_seconds

        async def lane() -> None:
            nonlocal next_index
            while next_index < len(urls) or time.perf_counter() < until:
                url = urls[next_index % len(urls)]
                next_index += 1
                started = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        ok = 200 <= response.status < 300
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                duration = time.perf_counter() - started
                durations.append(duration if ok else -duration)

        await asyncio.gather(*(lane() for _ in range(in_flight)))
        last = time.perf_counter()
    return last - first, durations


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def run_aiohttp(delay_ms: int, args: argparse.Namespace, receiver: ReceiverHandle) -> RunResult:
    """The ceiling: a raw aiohttp loop against the receiver, no database writes."""
    urls = delivery_urls(args.postbacks, receiver.url)
    print(
        f"[aiohttp {delay_ms} ms] {len(urls)} URLs, at least {args.aiohttp_seconds:g} s, "
        f"{args.in_flight} in flight...",
        flush=True,
    )
    receiver_cpu, own_cpu = receiver.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    window, durations = asyncio.run(aiohttp_loop(urls, args.aiohttp_seconds, args.in_flight))
    elapsed = time.perf_counter() - started
    receiver_cpu, own_cpu = receiver.cpu_seconds() - receiver_cpu, time.process_time() - own_cpu
    count = len(durations)
    ok = [d * 1000 for d in durations if d >= 0]
    result = RunResult(
        design="aiohttp",
        delay_ms=delay_ms,
        postbacks=count,
        seconds=window,
        per_second=count / window if window else 0.0,
        p50_ms=percentile(ok, 0.5),
        p95_ms=percentile(ok, 0.95),
        failed=count - len(ok),
        wall_seconds=window,
        receiver_cpu=receiver_cpu / window if window else None,
        sender_cpu=own_cpu / elapsed if elapsed else None,
    )
    report(result)
    return result


def run_workers_design(
    design: str,
    delay_ms: int,
    args: argparse.Namespace,
    env: dict[str, str],
    receiver: ReceiverHandle,
) -> RunResult:
    """Run ours or naive on the prepared deliveries until each is finished; measure."""
    from postbacks.models import Attempt, Delivery

    if design == "naive":
        count = args.naive_postbacks
        requeue_for_naive(count)
        env = {**env, "DJANGO_SETTINGS_MODULE": NAIVE_SETTINGS}
        finished = Attempt.objects.count
        queue, commands = worker_commands("naive")
    else:
        count = args.postbacks

        def finished() -> int:
            done = Delivery.objects.exclude(status__in=UNFINISHED).count()
            return min(done, Attempt.objects.count())

        workers = args.workers
        if design == "ours2":
            requeue_for_ours()
            workers *= 2
        queue, commands = worker_commands("ours", workers, args.pool, args.concurrency, args.beat)
    queued = queue_length(queue)
    if design == "naive" and queued != count:
        raise BenchError(f"Expected {count} tasks on {queue!r}, found {queued}.")
    print(f"[{design} {delay_ms} ms] {queued} messages queued; starting...", flush=True)
    log_path = Path(tempfile.gettempdir()) / f"bench-dispatch-{design}-{delay_ms}ms.log"
    receiver_cpu = receiver.cpu_seconds()
    run = run_workers(commands, env, finished, count, args.timeout, log_path)
    receiver_cpu = receiver.cpu_seconds() - receiver_cpu

    attempts, window, p50, p95, not_delivered = attempt_figures()
    if design in ("ours", "ours2"):
        delivered = Delivery.objects.filter(status=Delivery.Status.DELIVERED).count()
        if attempts != count:
            print(f"  note: {attempts} attempts logged for {count} deliveries", file=sys.stderr)
    else:
        delivered = attempts - not_delivered
    result = RunResult(
        design=design,
        delay_ms=delay_ms,
        postbacks=count,
        seconds=window,
        per_second=count / window if window else 0.0,
        p50_ms=p50,
        p95_ms=p95,
        failed=count - delivered,
        wall_seconds=run.wall_seconds,
        receiver_cpu=receiver_cpu / window if window else None,
        sender_cpu=run.cpu_seconds / run.busy_seconds if run.busy_seconds else None,
        per_command_cpu=run.per_command,
    )
    report(result)
    return result


def report(result: RunResult) -> None:
    per_command = ""
    if result.per_command_cpu:
        per_command = ", CPU s per command: " + " / ".join(
            f"{cpu:.1f}" for cpu in result.per_command_cpu
        )
    print(
        f"[{result.design} {result.delay_ms} ms] {result.per_second:.0f} postbacks/s, "
        f"{result.failed} failed, wall {result.wall_seconds:.1f} s{per_command}",
        flush=True,
    )


def run_delay(delay_ms: int, args: argparse.Namespace, env: dict[str, str]) -> list[RunResult]:
    """Every design against one receiver process answering after ``delay_ms``."""
    results: list[RunResult] = []
    reset_state()
    with receiver_process(delay_ms, args.receiver) as receiver:
        if {"ours", "ours2", "naive"} & set(args.designs):
            count = args.postbacks
            print(f"[{delay_ms} ms] preparing {count} conversions...", flush=True)
            started = time.monotonic()
            prepare_conversions(count, receiver.url)
            print(f"[{delay_ms} ms] prepared in {time.monotonic() - started:.0f} s", flush=True)
        for design in args.designs:
            if design == "aiohttp":
                results.append(run_aiohttp(delay_ms, args, receiver))
            else:
                results.append(run_workers_design(design, delay_ms, args, env, receiver))
    return results


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 1) -> str:
    """Fixed-width table: the first ``left`` columns left-aligned, figures right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def print_table(results: list[RunResult]) -> None:
    """Every run, one row each."""
    header = ("design", "receiver delay", "postbacks", "seconds", "postbacks/s")
    header += ("p50 ms", "p95 ms", "failed", "wall s", "receiver CPU", "sender CPU")
    rows = [
        (
            r.design,
            f"{r.delay_ms} ms",
            str(r.postbacks),
            f"{r.seconds:.2f}",
            f"{r.per_second:.0f}",
            f"{r.p50_ms:.0f}",
            f"{r.p95_ms:.0f}",
            str(r.failed),
            f"{r.wall_seconds:.1f}",
            share(r.receiver_cpu),
            share(r.sender_cpu),
        )
        for r in results
    ]
    print()
    print(format_table(header, rows, left=2))


def print_comparison(results: list[RunResult]) -> None:
    """Per delay: the designs side by side, the ratios and the issue's targets."""
    by_key = {(r.design, r.delay_ms): r for r in results}
    delays = sorted({r.delay_ms for r in results})
    header = ("receiver delay", "ours/s", "ours2/s", "naive/s", "aiohttp/s")
    header += ("ours/naive", "ours/aiohttp", "ours2/ours")
    rows = []
    verdicts: list[str] = []

    def ratio(a: RunResult | None, b: RunResult | None) -> float | None:
        return a.per_second / b.per_second if a and b and b.per_second else None

    for delay in delays:
        ours, ours2, naive, ceiling = (by_key.get((d, delay)) for d in DESIGNS)
        vs_naive, vs_ceiling, two = ratio(ours, naive), ratio(ours, ceiling), ratio(ours2, ours)
        rows.append(
            (
                f"{delay} ms",
                *(f"{r.per_second:.0f}" if r else "-" for r in (ours, ours2, naive, ceiling)),
                f"{vs_naive:.1f}x" if vs_naive is not None else "-",
                share(vs_ceiling),
                f"{two:.2f}x" if two is not None else "-",
            )
        )
        if delay == TARGET_DELAY_MS and ours:
            verdicts.append(
                verdict(
                    f"at {delay} ms: >= {TARGET_PER_SECOND:.0f} postbacks/s",
                    ours.per_second >= TARGET_PER_SECOND,
                    f"{ours.per_second:.0f}/s",
                )
            )
            if vs_naive is not None:
                verdicts.append(
                    verdict(
                        f"at {delay} ms: >= {TARGET_VS_NAIVE:.0f}x naive",
                        vs_naive >= TARGET_VS_NAIVE,
                        f"{vs_naive:.1f}x",
                    )
                )
            if vs_ceiling is not None:
                verdicts.append(
                    verdict(
                        f"at {delay} ms: >= {TARGET_VS_CEILING_SLOW:.0%} of the aiohttp ceiling",
                        vs_ceiling >= TARGET_VS_CEILING_SLOW,
                        share(vs_ceiling),
                    )
                )
        if delay == TARGET_CEILING_DELAY_MS and vs_ceiling is not None:
            verdicts.append(
                verdict(
                    f"at {delay} ms: >= {TARGET_VS_CEILING:.0%} of the aiohttp ceiling",
                    vs_ceiling >= TARGET_VS_CEILING,
                    share(vs_ceiling),
                )
            )
        if two is not None:
            verdicts.append(
                verdict(
                    f"at {delay} ms: two worker commands >= {TARGET_TWO_WORKERS}x one",
                    two >= TARGET_TWO_WORKERS,
                    f"{two:.2f}x",
                )
            )
    print()
    print(format_table(header, rows))
    if verdicts:
        print()
        print("\n".join(verdicts))


def verdict(target: str, met: bool, measured: str) -> str:
    return f"Target {target}: {'met' if met else 'NOT met'} ({measured})."


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Turn SIGTERM into SystemExit so the finally blocks stop the child processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    env = configure_environment(args.settings)
    ensure_database(os.environ["DATABASE_URL"])
    setup_django()
    try:
        lock_database()
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1
    from django.conf import settings

    pool = args.pool or f"{getattr(settings, 'CELERY_WORKER_POOL', None) or 'prefork'} (settings)"
    concurrency = args.concurrency or (
        f"{getattr(settings, 'CELERY_WORKER_CONCURRENCY', None) or os.cpu_count()} (settings)"
    )
    print(
        f"{args.postbacks} postbacks per run (naive: {args.naive_postbacks}, aiohttp: >= "
        f"{args.aiohttp_seconds:g} s, {args.in_flight} in flight), delays {args.delays} ms, "
        f"{args.receiver} receiver; ours: {args.workers} worker command(s), pool {pool}, "
        f"concurrency {concurrency}{', beat' if args.beat else ''}; naive: prefork x "
        f"{os.cpu_count()}; settings {args.settings}; {os.cpu_count()} cores"
    )
    if "ours" in args.designs:
        check_connection_budget(args.workers, args.concurrency)
    results: list[RunResult] = []
    try:
        for delay_ms in args.delays:
            results += run_delay(delay_ms, args, env)
    except BenchError as exc:
        print(f"Benchmark aborted: {exc}", file=sys.stderr)
        print_table(results)
        return 1
    print_table(results)
    print_comparison(results)
    return 0 if all(r.failed == 0 for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
