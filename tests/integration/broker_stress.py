"""Publish to, or consume from, the demo's embedded broker for a few seconds (a subprocess).

``python tests/integration/broker_stress.py publish|consume SECONDS``, with ``VAR_DIR`` set
and neither ``REDIS_URL`` nor ``CELERY_BROKER_URL``: the Celery app then connects as the
demo's web and worker processes do. Publishers send wake-up-sized messages to the
``postbacks`` queue through its exchange (as ``postbacks.services.wake`` does) as fast as
they can; a consumer takes them one by one. Each prints one JSON line of counts:
``{"published": n}`` or ``{"received": n, "unreadable": n}``, where ``unreadable`` counts
messages the transport could not decode (kombu's stock file-system transport hands out
files still being written).
"""

from __future__ import annotations

import json
import os
import sys
import time

PAYLOAD = {"task": "postbacks.dispatch", "padding": "x" * 4000}


def publish(seconds: float) -> dict[str, int]:
    from kombu import Exchange, Producer, Queue

    from tracker.celery import app

    queue = Queue("postbacks", Exchange("postbacks"), routing_key="postbacks")
    published = 0
    with app.connection_for_write() as connection:
        producer = Producer(connection.default_channel)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            producer.publish(
                PAYLOAD, exchange=queue.exchange, routing_key="postbacks", declare=[queue]
            )
            published += 1
    return {"published": published}


def consume(seconds: float) -> dict[str, int]:
    from tracker.celery import app

    received = unreadable = 0
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                message = channel.basic_get("postbacks", no_ack=True)
            except ValueError:  # json.JSONDecodeError: a file read before it was complete
                unreadable += 1
                continue
            if message is not None:
                received += 1
    return {"received": received, "unreadable": unreadable}


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
    role, seconds = sys.argv[1], float(sys.argv[2])
    counts = publish(seconds) if role == "publish" else consume(seconds)
    print(json.dumps(counts), flush=True)
