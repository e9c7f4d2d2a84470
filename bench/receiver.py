"""The benchmarks' postback destination, run in its own process.

Answers every request with 200 ``OK`` after ``--delay`` seconds, prints its base URL on the
first line of stdout, then serves until terminated. Two servers:

* ``aiohttp`` (default): an asyncio ``aiohttp.web`` server. One process of it answers far more
  requests per second than the clients it is measured against, so it is not the bottleneck
  of the raw ``aiohttp`` ceiling in ``dispatch.py``; a delay is an ``asyncio.sleep`` and costs
  no thread.
* ``threading``: ``postbacks.receiver.Receiver`` (stdlib ``ThreadingHTTPServer``, one thread per
  connection), the receiver of the demo and the tests. It saturates one core well below the
  raw client's rate and is kept for comparison.

With ``--record PARAM`` (``aiohttp`` only) it records, per value of the query parameter
``PARAM`` (e.g. the click ID in the postback URL), the Unix time of the first arrival and the
number of arrivals; ``GET /__arrivals`` answers them as JSON
``{"first": {value: time}, "count": {value: n}, "requests": total}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARRIVALS_PATH = "/__arrivals"
BACKLOG = 2048


def serve_threading(port: int, delay: float) -> None:
    """Serve with the project's threaded test receiver until SIGTERM."""
    from postbacks.receiver import Receiver, Reply

    receiver = Receiver(port, default=Reply(status=200, delay=delay))
    print(receiver.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        receiver.serve_forever()


async def serve_aiohttp(port: int, delay: float, record: str) -> None:
    """Serve with ``aiohttp.web`` until SIGTERM or SIGINT."""
    from aiohttp import web

    first: dict[str, float] = {}
    count: dict[str, int] = {}
    total = 0

    async def arrivals(request: web.Request) -> web.Response:
        return web.json_response({"first": first, "count": count, "requests": total})

    async def answer(request: web.Request) -> web.Response:
        nonlocal total
        total += 1
        if record:
            key = request.query.get(record)
            if key is not None:
                first.setdefault(key, time.time())
                count[key] = count.get(key, 0) + 1
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get(ARRIVALS_PATH, arrivals)
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG, reuse_address=True)
    await site.start()
    host, bound_port = runner.addresses[0][:2]
    print(f"http://{host}:{bound_port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark postback receiver.")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--server", choices=("aiohttp", "threading"), default="aiohttp")
    parser.add_argument(
        "--record", default="", metavar="PARAM", help="record arrivals per value of PARAM"
    )
    args = parser.parse_args(argv)
    if args.server == "threading":
        if args.record:
            parser.error("--record needs --server aiohttp")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve_threading(args.port, args.delay)
    else:
        asyncio.run(serve_aiohttp(args.port, args.delay, args.record))


if __name__ == "__main__":
    main()
