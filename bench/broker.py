"""The demo's embedded broker under a burst: kombu's file-system transport, the fixed one
(``tracker.broker``) and kombu's SQLAlchemy transport on SQLite.

For each transport, in a fresh temporary folder, ``--publishers`` processes publish
wake-up-sized messages (4 kB of JSON) to one queue through its direct exchange, as fast as they
can for ``--seconds``, while ``--consumers`` processes take them one by one (``basic_get``).
Printed per transport: messages published, received, unreadable (the transport handed out
something that is no JSON: kombu's file transport reading a file still being written), other
errors, received per second, and the fanout support (remote control, broadcasts). The
SQLAlchemy transport runs only when SQLAlchemy is importable (the project does not pin it).

    .venv/bin/python bench/broker.py [--seconds 5] [--publishers 2] [--consumers 2]
        [--transports kombu-file,fixed-file,sqla-sqlite]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAYLOAD = {"task": "postbacks.dispatch", "padding": "x" * 4000}
TRANSPORTS = {
    "kombu-file": ("filesystem://", "filesystem"),
    "fixed-file": ("filesystem://", "tracker.broker:Transport"),
    "sqla-sqlite": ("sqla+sqlite:///{folder}/broker.sqlite3", None),
}


def connection(name: str, folder: str):
    from kombu import Connection

    url, transport = TRANSPORTS[name]
    options = {}
    if url.startswith("filesystem"):
        options = {
            "data_folder_in": f"{folder}/queue",
            "data_folder_out": f"{folder}/queue",
            "processed_folder": f"{folder}/processed",
            "control_folder": f"{folder}/control",
        }
    return Connection(url.format(folder=folder), transport=transport, transport_options=options)


def publisher(name: str, folder: str, seconds: float, results) -> None:
    from kombu import Exchange, Producer, Queue

    queue = Queue("postbacks", Exchange("postbacks"), routing_key="postbacks")
    published = errors = 0
    with connection(name, folder) as conn:
        producer = Producer(conn.default_channel)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                producer.publish(
                    PAYLOAD, exchange=queue.exchange, routing_key="postbacks", declare=[queue]
                )
                published += 1
            except Exception:
                errors += 1
    results.put({"published": published, "errors": errors})


def consumer(name: str, folder: str, seconds: float, results) -> None:
    received = unreadable = errors = 0
    with connection(name, folder) as conn:
        channel = conn.default_channel
        deadline = time.monotonic() + seconds + 1  # the last published ones too
        while time.monotonic() < deadline:
            try:
                if channel.basic_get("postbacks", no_ack=True) is not None:
                    received += 1
            except ValueError:
                unreadable += 1
            except Exception:
                errors += 1
    results.put({"received": received, "unreadable": unreadable, "errors": errors})


def run(name: str, args: argparse.Namespace) -> dict[str, int] | None:
    if name == "sqla-sqlite" and importlib.util.find_spec("sqlalchemy") is None:
        return None
    folder = tempfile.mkdtemp(prefix=f"bench-broker-{name}-")
    for sub in ("queue", "processed", "control"):
        os.mkdir(f"{folder}/{sub}")
    results = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=publisher, args=(name, folder, args.seconds, results))
        for _ in range(args.publishers)
    ] + [
        multiprocessing.Process(target=consumer, args=(name, folder, args.seconds, results))
        for _ in range(args.consumers)
    ]
    try:
        for proc in procs:
            proc.start()
        totals = {"published": 0, "received": 0, "unreadable": 0, "errors": 0}
        for _ in procs:
            for key, value in results.get(timeout=args.seconds + 60).items():
                totals[key] += value
        for proc in procs:
            proc.join()
        return totals
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    args = parser.parse_args()
    print(
        f"{args.publishers} publishers and {args.consumers} consumers for {args.seconds:g} s, "
        f"4 kB messages"
    )
    print(f"{'transport':<12} {'published':>9} {'received':>8} {'unreadable':>10} "
          f"{'errors':>6} {'msg/s':>6}  fanout")  # fmt: skip
    for name in args.transports.split(","):
        totals = run(name, args)
        if totals is None:
            print(f"{name:<12} skipped: SQLAlchemy is not installed")
            continue
        with connection(name, tempfile.gettempdir()) as conn:
            fanout = conn.transport.Channel.supports_fanout
        print(
            f"{name:<12} {totals['published']:>9} {totals['received']:>8} "
            f"{totals['unreadable']:>10} {totals['errors']:>6} "
            f"{totals['received'] / args.seconds:>6.0f}  {'yes' if fanout else 'no'}"
        )


if __name__ == "__main__":
    main()
