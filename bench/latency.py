"""Conversion -> postback latency over real HTTP at a fixed conversion rate.

Starts, each in its own process: the receiver (``bench/receiver.py --record click-id``, which
records the arrival time of the first postback per click ID), the project's WSGI app under
gunicorn (``gunicorn tracker.wsgi -w <2 x cores + 1>``, sync workers as in production), a
Celery worker as ``dispatch.py`` starts it (``celery -A tracker worker -Q postbacks,celery``,
pool and concurrency from the settings unless given) and ``celery beat`` (the sweeper).

Setup: one traffic source, offer, campaign and postback rule whose URL carries the click ID
(``/postback?click-id={click_id}&...``); the clicks are bulk-inserted before the timed phase.
A few warm-up conversions go through the whole chain first. Then an asyncio ``aiohttp``
client sends ``GET /cv?click_id=...&payout=1&txid=...`` on an open-loop schedule (request i
at t0 + i / rate, never delayed by a slow answer; keep-alive where the server allows it),
and the script waits for the postbacks to settle.

Printed: conversions sent, answered 200, postbacks received, missing (sent, no postback;
and how many of those were answered 200); conversion -> postback latency p50/p90/p99/max,
from the moment the client sent ``/cv`` to the receiver's arrival time (both ``time.time()``
on the same machine); the ``/cv`` answer latency p50/p99; and whether the targets are met
(p50 < 50 ms, p99 < 250 ms, none missing). Uses its own database and Redis DB (defaults
below; created, migrated, truncated and flushed at start) and stops every process it
started, also on Ctrl-C or an error.

    .venv/bin/python bench/latency.py [--rate 200] [--seconds 30] [--web-workers N]
        [--workers 1] [--pool threads] [--concurrency 50] [--no-beat] [--settle 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dispatch import (  # noqa: E402
    CLOCK_TICKS,
    STARTUP_TIMEOUT,
    BenchError,
    ensure_database,
    format_table,
    group_cpu_seconds,
    lock_database,
    percentile,
    receiver_process,
    reset_state,
    setup_django,
    spawn,
    stop_process,
    worker_commands,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postbacks_bench_latency"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
RECORD_PARAM = "click-id"
POSTBACK_TEMPLATE = "/postback?click-id={click_id}&payout={payout}&txid={txid}"
TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0
WARMUP_PER_WEB_WORKER = 2
WEB_START_TIMEOUT = 60.0
CLIENT_TIMEOUT = 120.0  # an overloaded /cv queues requests for tens of seconds


@dataclass
class Sent:
    """One ``/cv`` request: when it was due and sent, how and when it was answered."""

    click_id: str
    due: float  # loop time it was scheduled for
    sent_at: float  # Unix time just before sending
    lag: float = 0.0  # seconds the send started after its due time
    status: int | None = None  # None: no answer (connection error or timeout)
    answer_seconds: float | None = None


@dataclass
class Figures:
    """What the run measured."""

    sent: int
    answered_200: int
    other_answers: dict[str, int]
    received: int
    duplicates: int
    missing: int  # sent, no postback
    missing_answered: int  # answered 200, no postback
    latencies_ms: list[float] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)
    send_seconds: float = 0.0
    max_lag_ms: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per role, timed phase


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        description="Conversion -> postback latency over HTTP at a fixed conversion rate."
    )
    parser.add_argument("--rate", type=float, default=200.0, help="conversions per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the timed phase")
    parser.add_argument(
        "--web-workers", type=int, default=2 * cores + 1, help="gunicorn workers (2 x cores + 1)"
    )
    parser.add_argument(
        "--gunicorn-options", default="", help="extra gunicorn options, e.g. '-k gthread'"
    )
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--pool", default=None, help="Celery pool (default: settings)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="Celery concurrency (default: settings)"
    )
    parser.add_argument("--no-beat", action="store_true", help="do not run celery beat")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds to wait for the last postbacks"
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--settings", default="tracker.settings", help="Django settings module")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or min(args.web_workers, args.workers) < 1:
        parser.error("--rate, --seconds, --web-workers and --workers must be positive")
    return args


def configure_environment(args: argparse.Namespace) -> dict[str, str]:
    """This bench's own database and Redis DB, production-like settings; returns the env."""
    os.environ.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        DEBUG="false",
        POSTBACKS_ALLOW_PRIVATE_NETWORKS="true",
        DJANGO_SETTINGS_MODULE=args.settings,
    )
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    return dict(os.environ)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_cpu_seconds(database: str) -> float:
    """CPU seconds of the live PostgreSQL backends connected to ``database`` (Linux /proc).

    A backend's title reads ``postgres: <user> <database> <host>(<port>) <state>``; backends
    that exited during the window are not counted (the project's pools keep theirs open).
    """
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres: ") or f" {database} " not in title:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


@dataclass
class Roles:
    """Process groups per role, to split the timed phase's CPU between them."""

    database: str
    groups: dict[str, set[int]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, float]:
        cpu = {role: group_cpu_seconds(pgids) for role, pgids in self.groups.items()}
        cpu["postgres"] = database_cpu_seconds(self.database)
        cpu["load client"] = time.process_time()
        return cpu


@contextmanager
def running(
    command: list[str], name: str, env: dict[str, str], roles: Roles | None = None, role: str = ""
) -> Iterator[Path]:
    """Run a process (its output in a log file) for the duration of the block; yields the log.

    With ``roles``, the process group is counted under ``role`` (default: ``name``).
    """
    log_path = Path(tempfile.gettempdir()) / f"bench-latency-{name}.log"
    with open(log_path, "w") as log:
        proc = spawn(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if roles is not None:
        roles.groups.setdefault(role or name, set()).add(proc.pid)
    try:
        yield log_path
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode}; see {log_path}")
    finally:
        stop_process(proc, name)


def wait_for_web(base_url: str, log_path: Path) -> None:
    """Poll ``/cv`` (without a click ID: 400) until the web server answers."""
    deadline = time.monotonic() + WEB_START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base_url}/cv", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP answer, e.g. 400 missing_click_id: it is up
        except OSError:
            time.sleep(0.2)
    raise BenchError(f"The web server did not answer within {WEB_START_TIMEOUT:.0f} s; {log_path}")


def prepare(count: int, receiver_url: str) -> list[str]:
    """Create the source, offer, campaign and rule; bulk-insert ``count`` clicks."""
    from bench.fixtures import bulk_clicks, campaign_with_rule

    source, offer, campaign = campaign_with_rule(
        "Latency", receiver_url, POSTBACK_TEMPLATE, Decimal("1.00")
    )
    clicks = bulk_clicks(source, offer, campaign, count, "lat")
    return [str(click.pk) for click in clicks]


def arrivals(receiver_url: str) -> tuple[dict[str, float], dict[str, int]]:
    """The receiver's first arrival time and arrival count per click ID."""
    with urllib.request.urlopen(f"{receiver_url}/__arrivals", timeout=10) as response:
        data = json.load(response)
    return data["first"], data["count"]


def wait_for_postbacks(receiver_url: str, click_ids: list[str], timeout: float) -> None:
    """Return once every click ID has a postback or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    wanted = set(click_ids)
    while True:
        first, _ = arrivals(receiver_url)
        if wanted.issubset(first) or time.monotonic() > deadline:
            return
        time.sleep(0.5)


async def send_conversions(base_url: str, click_ids: list[str], rate: float) -> list[Sent]:
    """Send ``/cv`` for each click ID, request i at t0 + i / rate, each on its own task."""
    import aiohttp

    loop = asyncio.get_running_loop()
    sent: list[Sent] = []
    # No connection limit: a slow answer must not hold back the next request.
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(item: Sent, index: int) -> None:
            params = {"click_id": item.click_id, "payout": "1", "txid": f"L{index}"}
            item.sent_at = time.time()
            started = time.perf_counter()
            item.lag = loop.time() - item.due
            try:
                async with session.get(f"{base_url}/cv", params=params) as response:
                    await response.read()
                    item.status = response.status
            except (TimeoutError, aiohttp.ClientError):
                item.status = None
            item.answer_seconds = time.perf_counter() - started

        tasks = []
        t0 = loop.time() + 0.05
        for index, click_id in enumerate(click_ids):
            item = Sent(click_id=click_id, due=t0 + index / rate, sent_at=0.0)
            sent.append(item)
            wait = item.due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(item, index)))
        await asyncio.gather(*tasks)
    return sent


def measure(sent: list[Sent], first: dict[str, float], count: dict[str, int]) -> Figures:
    """Latency and counts from the client's records and the receiver's arrivals."""
    ok = [s for s in sent if s.status == 200]
    other: dict[str, int] = {}
    for s in sent:
        if s.status != 200:
            key = str(s.status) if s.status is not None else "no answer"
            other[key] = other.get(key, 0) + 1
    ids = {s.click_id for s in sent}
    # From every sent conversion whose postback came, answered or not (a /cv that timed out
    # at the client may still have committed its conversion).
    latencies = [(first[s.click_id] - s.sent_at) * 1000 for s in sent if s.click_id in first]
    return Figures(
        sent=len(sent),
        answered_200=len(ok),
        other_answers=other,
        received=sum(1 for cid in ids if cid in first),
        duplicates=sum(n - 1 for cid, n in count.items() if cid in ids and n > 1),
        missing=sum(1 for s in sent if s.click_id not in first),
        missing_answered=sum(1 for s in ok if s.click_id not in first),
        latencies_ms=latencies,
        answer_ms=[s.answer_seconds * 1000 for s in sent if s.answer_seconds is not None],
        send_seconds=(sent[-1].sent_at - sent[0].sent_at) if len(sent) > 1 else 0.0,
        max_lag_ms=max((s.lag for s in sent), default=0.0) * 1000,
    )


def print_figures(fig: Figures, rate: float) -> bool:
    """Print the results and the targets; True when every target is met."""
    achieved = (fig.sent - 1) / fig.send_seconds if fig.send_seconds else 0.0
    others = ", ".join(f"{k}: {v}" for k, v in sorted(fig.other_answers.items())) or "none"
    print()
    print(
        f"conversions sent     {fig.sent} (offered {rate:g}/s, sent at {achieved:.0f}/s, ", end=""
    )
    print(f"schedule lag max {fig.max_lag_ms:.0f} ms)")
    print(f"answered 200         {fig.answered_200} (other answers: {others})")
    print(f"postbacks received   {fig.received} (duplicates: {fig.duplicates})")
    print(f"missing              {fig.missing} (of them answered 200: {fig.missing_answered})")
    lat, ans = fig.latencies_ms, fig.answer_ms
    rows = [
        (
            "conversion -> postback",
            *(f"{percentile(lat, q):.0f}" for q in (0.5, 0.9, 0.99)),
            f"{max(lat, default=0):.0f}",
        ),
        (
            "/cv answer",
            *(f"{percentile(ans, q):.0f}" for q in (0.5, 0.9, 0.99)),
            f"{max(ans, default=0):.0f}",
        ),
    ]
    print()
    print(format_table(("latency", "p50 ms", "p90 ms", "p99 ms", "max ms"), rows))
    if fig.cpu_seconds and fig.sent:
        window = fig.send_seconds or 1.0
        cpu_rows = [
            (role, f"{cpu:.1f}", f"{cpu * 1000 / fig.sent:.2f}", f"{cpu / window:.0%}")
            for role, cpu in fig.cpu_seconds.items()
        ]
        total = sum(fig.cpu_seconds.values())
        cpu_rows.append(
            ("total", f"{total:.1f}", f"{total * 1000 / fig.sent:.2f}", f"{total / window:.0%}")
        )
        print()
        print("CPU from the first conversion sent until the postbacks settled:")
        print(format_table(("role", "CPU s", "ms per conversion", "cores (send window)"), cpu_rows))
    checks = [
        (f"p50 < {TARGET_P50_MS:.0f} ms", bool(lat) and percentile(lat, 0.5) < TARGET_P50_MS),
        (f"p99 < {TARGET_P99_MS:.0f} ms", bool(lat) and percentile(lat, 0.99) < TARGET_P99_MS),
        ("none missing", fig.missing == 0),
    ]
    print()
    for name, met in checks:
        print(f"Target {name}: {'met' if met else 'NOT met'}.")
    return all(met for _, met in checks)


def run(args: argparse.Namespace, env: dict[str, str]) -> bool:
    """Set up, start every process, warm up, send at the fixed rate, measure."""
    total = round(args.rate * args.seconds)
    warmup = WARMUP_PER_WEB_WORKER * args.web_workers
    reset_state()
    roles = Roles(database=args.database_url.rsplit("/", 1)[-1])
    with ExitStack() as stack:
        receiver = stack.enter_context(receiver_process(0, "aiohttp", RECORD_PARAM))
        roles.groups["receiver"] = {receiver.proc.pid}
        started = time.monotonic()
        click_ids = prepare(total + warmup, receiver.url)
        print(f"{total + warmup} clicks created in {time.monotonic() - started:.1f} s.", flush=True)
        warmup_ids, click_ids = click_ids[:warmup], click_ids[warmup:]

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        web = [sys.executable, "-m", "gunicorn", "tracker.wsgi", "-w", str(args.web_workers)]
        web += ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
        web += args.gunicorn_options.split()
        web_log = stack.enter_context(running(web, "gunicorn", env, roles, "web (gunicorn)"))
        _, commands = worker_commands(
            "ours", args.workers, args.pool, args.concurrency, beat=not args.no_beat
        )
        for i, command in enumerate(commands):
            role = "celery beat" if "beat" in command else "celery worker"
            stack.enter_context(running(command, f"celery-{i}", env, roles, role))
        wait_for_web(base_url, web_log)
        print(f"gunicorn ({args.web_workers} workers) on {base_url}; receiver on {receiver.url}")
        print(f"celery: {' | '.join(' '.join(c[2:]) for c in commands)}", flush=True)

        sent = asyncio.run(send_conversions(base_url, warmup_ids, rate=50.0))
        if any(s.status != 200 for s in sent):
            raise BenchError(f"Warm-up conversions failed: {[s.status for s in sent]}")
        wait_for_postbacks(receiver.url, warmup_ids, STARTUP_TIMEOUT * 2)
        first, _ = arrivals(receiver.url)
        if not set(warmup_ids).issubset(first):
            raise BenchError("Warm-up postbacks did not arrive; is the Celery worker running?")
        print(f"Warm-up done; sending {total} conversions at {args.rate:g}/s...", flush=True)

        before = roles.snapshot()
        sent = asyncio.run(send_conversions(base_url, click_ids, args.rate))
        answered = [s.click_id for s in sent if s.status == 200]
        print(f"Sent; waiting up to {args.settle:g} s for the postbacks...", flush=True)
        wait_for_postbacks(receiver.url, answered, args.settle)
        after = roles.snapshot()
        first, count = arrivals(receiver.url)
    figures = measure(sent, first, count)
    figures.cpu_seconds = {role: after[role] - before[role] for role in before}
    return print_figures(figures, args.rate)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM becomes SystemExit and Ctrl-C KeyboardInterrupt: both unwind through the
    # context managers, which stop every process this script started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    env = configure_environment(args)
    try:
        ensure_database(args.database_url)
        setup_django()
        lock_database()
        return 0 if run(args, env) else 3
    except BenchError as exc:
        print(f"Benchmark aborted: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted; every process was stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
