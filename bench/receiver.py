"""The benchmark's postback destination, run in its own process.

Serves ``postbacks.receiver.Receiver`` on 127.0.0.1 answering 200 after ``--delay`` seconds,
prints its URL on the first line of stdout, then serves until terminated.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postbacks.receiver import Receiver, Reply


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()

    receiver = Receiver(args.port, default=Reply(status=200, delay=args.delay))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(receiver.url, flush=True)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        receiver.serve_forever()


if __name__ == "__main__":
    main()
