"""Postback dispatch benchmark: postbacks fired per second with every attempt logged.

For each receiver delay it prepares N conversions (one delivery each, its task queued),
then starts a worker and measures from the Attempt rows:

* ``ours``: the pipeline, ``celery -A tracker worker -Q postbacks -P threads -c 50``
  (``--workers K`` starts K such processes, ``--concurrency`` sets the threads of each);
* ``naive``: ``bench/naive.py``, one task per postback calling ``requests.get(url)`` and
  logging one Attempt row, on Celery's default prefork pool (one process per core).

Throughput is N / (last attempt end - first attempt start); "wall" runs from the worker's
start until every postback is finished. The receiver runs in its own process.
Needs PostgreSQL and Redis (``DATABASE_URL``, ``REDIS_URL``; defaults below); an advisory
lock keeps a second benchmark off the same database.

    .venv/bin/python bench/dispatch.py [--postbacks 3000] [--delays 0,100] [--skip-naive]
        [--workers 1] [--concurrency 50] [--timeout 900] [--settings tracker.settings]
"""

from __future__ import annotations

import argparse
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
GOAL_PER_SECOND = 300.0
GOAL_DELAY_MS = 100
POLL_SECONDS = 0.2
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1
ADVISORY_LOCK_KEY = 7_300_001
NAIVE_SETTINGS = "bench.naive_settings"
UNFINISHED = ("scheduled", "sending")
POSTBACK_TEMPLATE = "/postback?click-id={externalid}&payout={payout}&txid={txid}"


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Postbacks per second, every attempt logged: pipeline vs naive tasks."
    )
    parser.add_argument("--postbacks", type=int, default=3000, help="postbacks per run")
    parser.add_argument(
        "--delays", default="0,100", help="receiver answer delays in ms, comma-separated"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="threads of our worker")
    parser.add_argument(
        "--workers", type=int, default=1, help="our worker processes (each with --concurrency)"
    )
    parser.add_argument("--skip-naive", action="store_true", help="run our design only")
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
    if min(args.postbacks, args.concurrency, args.workers) < 1 or not args.delays:
        parser.error("--postbacks, --concurrency, --workers and --delays must be positive")
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


def check_connection_budget(workers: int, threads: int) -> None:
    """Warn when the workers may need more PostgreSQL connections than are free.

    A worker holds at most one connection per thread, or its pool's ``max_size`` if smaller.
    """
    from django.conf import settings
    from django.db import connection

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
    """Terminate a process we started (its whole group), killing it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in {STOP_TIMEOUT:.0f} s; killing it.", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, e.g. pool children
    proc.wait()


@contextmanager
def receiver_process(delay_ms: int) -> Iterator[str]:
    """Run bench/receiver.py answering 200 after ``delay_ms``; yields its base URL."""
    proc = spawn(
        [sys.executable, str(ROOT / "bench" / "receiver.py"), "--delay", str(delay_ms / 1000)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
        url = proc.stdout.readline().strip() if ready else ""
        if not url.startswith("http://"):
            raise BenchError(f"The receiver did not start within {STARTUP_TIMEOUT:.0f} s.")
        yield url
    finally:
        stop_process(proc, "receiver")


def prepare_conversions(count: int, receiver_url: str) -> None:
    """Register ``count`` conversions, each planning exactly one delivery to the receiver.

    ``conversion_register`` writes the Delivery rows and, after commit, queues one
    ``postbacks.deliver`` task per delivery.
    """
    from campaigns.models import AffiliateNetwork, Campaign, CampaignOffer, Offer, TrafficSource
    from postbacks.models import Delivery, EventType, PostbackRule
    from tracker.celery import app
    from tracker.models import Click
    from tracker.services import conversion_register

    declare_queue(app, "postbacks")
    source = TrafficSource.objects.create(name="Bench source", external_id_param="cid")
    network = AffiliateNetwork.objects.create(name="Bench network")
    offer = Offer.objects.create(
        name="Bench offer",
        affiliate_network=network,
        url=f"{receiver_url}/offer?s2={{click_id}}",
        payout=Decimal("1.50"),
    )
    campaign = Campaign.objects.create(name="Bench campaign", traffic_source=source)
    CampaignOffer.objects.create(campaign=campaign, offer=offer)
    PostbackRule.objects.create(
        name="Bench postback",
        event_type=EventType.CONVERSION,
        url_template=receiver_url + POSTBACK_TEMPLATE,
        max_attempts=1,  # a failed try is final: every run ends, failures are counted
        timeout_seconds=10,
    )
    clicks = Click.objects.bulk_create(
        Click(
            campaign=campaign,
            offer=offer,
            traffic_source=source,
            external_id=f"ext-{i}",
            ip="127.0.0.1",
        )
        for i in range(count)
    )
    for i, click in enumerate(clicks):
        conversion_register(click, payout=Decimal("1.50"), currency="USD", txid=f"T{i}")
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


def requeue_for_naive() -> None:
    """Replace the queued pipeline tasks with one naive task per planned delivery."""
    from bench import naive
    from postbacks.models import Delivery
    from tracker.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("postbacks")
    declare_queue(naive.app, naive.QUEUE)
    for pk, url in Delivery.objects.order_by("pk").values_list("pk", "url"):
        naive.fire.apply_async((pk, url))


def run_workers(
    commands: list[list[str]],
    env: dict[str, str],
    finished: Callable[[], int],
    count: int,
    timeout: float,
    log_path: Path,
) -> float:
    """Start the worker processes, wait until ``finished()`` reaches ``count``.

    Returns the wall seconds from the first start. Every process is stopped on the way out.
    """
    procs: list[subprocess.Popen] = []
    with open(log_path, "w") as log:
        started = time.monotonic()
        try:
            for command in commands:
                procs.append(
                    spawn(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                )
            while True:
                done = finished()
                elapsed = time.monotonic() - started
                if done >= count:
                    return elapsed
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


def worker_commands(design: str, args: argparse.Namespace) -> tuple[str, list[list[str]]]:
    """The queue a design consumes and the command line of each of its worker processes."""
    celery = [sys.executable, "-m", "celery"]
    options = ["--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if design == "naive":
        from bench import naive

        # Celery's defaults: prefork pool, one child process per core.
        return naive.QUEUE, [[*celery, "-A", "bench.naive", "worker", "-Q", naive.QUEUE, *options]]
    ours = ["-A", "tracker", "worker", "-Q", "postbacks", "-P", "threads"]
    ours += ["-c", str(args.concurrency)]
    return "postbacks", [[*celery, *ours, "-n", f"b{i}@%h", *options] for i in range(args.workers)]


def run_once(
    design: str, delay_ms: int, args: argparse.Namespace, env: dict[str, str]
) -> RunResult:
    """Prepare, run one worker until every postback is finished, measure."""
    from postbacks.models import Attempt, Delivery

    count = args.postbacks
    reset_state()
    with receiver_process(delay_ms) as receiver_url:
        print(f"[{design} {delay_ms} ms] preparing {count} conversions...", flush=True)
        started = time.monotonic()
        prepare_conversions(count, receiver_url)
        elapsed = time.monotonic() - started
        print(f"[{design} {delay_ms} ms] prepared in {elapsed:.0f} s", flush=True)
        if design == "naive":
            requeue_for_naive()
        queue, commands = worker_commands(design, args)
        finished = (
            Delivery.objects.exclude(status__in=UNFINISHED).count
            if design == "ours"
            else Attempt.objects.count
        )
        queued = queue_length(queue)
        if queued != count:
            raise BenchError(f"Expected {count} tasks on {queue!r}, found {queued}.")
        print(f"[{design} {delay_ms} ms] {queued} tasks queued; starting the worker...", flush=True)
        log_path = Path(tempfile.gettempdir()) / f"bench-dispatch-{design}-{delay_ms}ms.log"
        if design == "naive":
            env = {**env, "DJANGO_SETTINGS_MODULE": NAIVE_SETTINGS}
        wall = run_workers(commands, env, finished, count, args.timeout, log_path)

    attempts, window, p50, p95, not_delivered = attempt_figures()
    if design == "ours":
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
        wall_seconds=wall,
    )
    print(
        f"[{design} {delay_ms} ms] {result.per_second:.0f} postbacks/s, "
        f"{result.failed} failed, wall {wall:.1f} s",
        flush=True,
    )
    return result


def print_table(results: list[RunResult]) -> None:
    """The results as a fixed-width table: text columns left, figures right."""
    header = ("design", "receiver delay", "postbacks", "seconds", "postbacks/s")
    header += ("p50 ms", "p95 ms", "failed", "wall s")
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
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print()
    print(line(header))
    print(line(tuple("-" * w for w in widths)))
    for row in rows:
        print(line(row))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Turn SIGTERM into SystemExit so the finally blocks stop the child processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = configure_environment(args.settings)
    ensure_database(os.environ["DATABASE_URL"])
    setup_django()
    try:
        lock_database()
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1
    designs = ["ours"] if args.skip_naive else ["ours", "naive"]
    print(
        f"{args.postbacks} postbacks per run, delays {args.delays} ms; ours: {args.workers} "
        f"worker(s) x {args.concurrency} threads; naive: prefork x {os.cpu_count()}; "
        f"settings {args.settings}"
    )
    check_connection_budget(args.workers, args.concurrency)
    results: list[RunResult] = []
    try:
        for delay_ms in args.delays:
            for design in designs:
                results.append(run_once(design, delay_ms, args, env))
    except BenchError as exc:
        print(f"Benchmark aborted: {exc}", file=sys.stderr)
        print_table(results)
        return 1
    print_table(results)
    ours = [r for r in results if r.design == "ours" and r.delay_ms == GOAL_DELAY_MS]
    if ours:
        met = "met" if ours[0].per_second >= GOAL_PER_SECOND else "NOT met"
        print(f"\nGoal >= {GOAL_PER_SECOND:.0f} postbacks/s at {GOAL_DELAY_MS} ms: {met}.")
    return 0 if all(r.failed == 0 for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
