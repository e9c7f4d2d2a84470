"""What one ``/cv`` request costs in process, against the naive ``/cv`` view.

No HTTP server and no load generator: the Django test client calls ``/cv`` (fresh click IDs,
the bench's one conversion rule) and the naive view of ``bench/inbound_urls.py`` alternately,
``--requests`` times each, in one thread, and prints per request the CPU time of this process
(``time.process_time``: the Python side, what gunicorn's sync workers spend) and the wall
time (CPU plus the waits on PostgreSQL and Redis), medians over ``--rounds`` rounds, then the
SQL statements of one request of each. ``--profile`` adds a cProfile of the ``/cv`` requests
(top functions by cumulative time). Uses ``bench/inbound.py``'s database, data and settings.

    .venv/bin/python bench/cv_cost.py [--requests 500] [--rounds 5] [--profile] [--no-wake]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import inbound  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="per endpoint and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile the /cv requests")
    parser.add_argument("--no-wake", action="store_true", help="no wake-up publish")
    parser.add_argument("--top", type=int, default=40, help="functions in the profile")
    args = parser.parse_args(argv)
    # What bench/inbound.environment reads.
    args.visitors = "none"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    inbound.environment(args)
    inbound.database_ready()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    workdir = Path(tempfile.mkdtemp(prefix="bench-cv-cost-"))
    files = [workdir / "cv.txt", workdir / "naive.txt"]
    clicks = args.requests * (args.rounds + 1)
    try:
        _, _, naive_path = inbound.seed(2 * clicks, files)
        paths = ("/cv", naive_path)
        ids = {path: iter(files[n].read_text().split()) for n, path in enumerate(paths)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    client = Client(HTTP_HOST="127.0.0.1")
    query = "&payout=1.50&txid=T&status=approved"

    def one(path: str) -> None:
        response = client.get(f"{path}?click_id={next(ids[path])}{query}")
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}: {response.content!r}")

    for path in ids:  # first-use loading (caches, rules, broker connection)
        for _ in range(args.requests // 10 or 1):
            one(path)
    cost: dict[str, list[tuple[float, float]]] = {path: [] for path in ids}
    profiler = cProfile.Profile() if args.profile else None
    for _ in range(args.rounds):
        for path in ids:
            if profiler and path == "/cv":
                profiler.enable()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.requests):
                one(path)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if profiler and path == "/cv":
                profiler.disable()
            cost[path].append((cpu / args.requests * 1000, wall / args.requests * 1000))
    naive_cpu = statistics.median(c for c, _ in cost[naive_path])
    naive_wall = statistics.median(w for _, w in cost[naive_path])
    wake = "off" if args.no_wake else "on"
    print(f"{args.rounds} rounds x {args.requests} requests each, wake-up publish {wake}")
    header = ("endpoint", "CPU ms", "wall ms", "CPU vs naive", "wall vs naive")
    print("{:10} {:>8} {:>8} {:>13} {:>14}".format(*header))
    for path, name in (("/cv", "/cv"), (naive_path, "naive /cv")):
        cpu = statistics.median(c for c, _ in cost[path])
        wall = statistics.median(w for _, w in cost[path])
        print(
            f"{name:10} {cpu:8.2f} {wall:8.2f} {cpu / naive_cpu:12.2f}x {wall / naive_wall:13.2f}x"
        )
    for path, name in (("/cv", "/cv"), (naive_path, "naive /cv")):
        with CaptureQueriesContext(connection) as queries:
            one(path)
        print(f"\nSQL of one {name} request ({len(queries.captured_queries)} statements):")
        for q in queries.captured_queries:
            print(f"  {q['sql'][:300]}")
    if profiler:
        print()
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
