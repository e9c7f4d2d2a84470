"""Use the demo's embedded broker from a subprocess, as the demo's processes do.

Run as ``python -m tests.integration.broker_stress ROLE ARG``, with ``VAR_DIR`` set and neither
``REDIS_URL`` nor ``CELERY_BROKER_URL``: the Celery app then connects to the embedded broker.
Each role prints one JSON line last.

- ``publish SECONDS``: wake-up-sized messages to the ``postbacks`` queue through its exchange
  (as ``postbacks.services.wake`` does), as fast as it can: ``{"published": n}``.
- ``consume SECONDS``: takes them one by one: ``{"received": n, "unreadable": n}``, where
  ``unreadable`` counts messages the transport could not decode (kombu's stock file-system
  transport hands out files still being written).
- ``listen NODE``: consumes a broadcast queue (fanout exchange ``wake_all``) and the node's
  own queue (Celery's ``worker_direct``), prints ``listening`` once both are declared, then
  ``{"received": [...]}`` after two messages (or 20 s).
- ``announce NODE,NODE``: one broadcast, then one message to each node's own queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
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


def consume(seconds: float, *, until_empty: bool = False) -> dict[str, int]:
    """Take messages for ``seconds``; with ``until_empty``, until the queue is empty
    (``seconds`` then bounds the wait)."""
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
            elif until_empty:
                break
    return {"received": received, "unreadable": unreadable}


def listen(node: str) -> dict[str, list[str]]:
    from celery.utils import worker_direct
    from kombu import Consumer
    from kombu.common import Broadcast

    from tracker.celery import app

    got: list[str] = []

    def on_message(body: dict, message) -> None:
        got.append(body["to"])
        message.ack()

    with app.connection_for_read() as connection:
        queues = [Broadcast("wake_all"), worker_direct(node)]
        with Consumer(connection, queues, callbacks=[on_message], accept=["json"]):
            print("listening", flush=True)
            deadline = time.monotonic() + 20
            while len(got) < 2 and time.monotonic() < deadline:
                with contextlib.suppress(socket.timeout):
                    connection.drain_events(timeout=0.5)
    return {"received": sorted(got)}


def announce(nodes: list[str]) -> dict[str, int]:
    from celery.utils import worker_direct
    from kombu import Producer
    from kombu.common import Broadcast

    from tracker.celery import app

    with app.connection_for_write() as connection:
        producer = Producer(connection.default_channel)
        everyone = Broadcast("wake_all").exchange
        producer.publish({"to": "all"}, exchange=everyone, routing_key="", declare=[everyone])
        for node in nodes:
            queue = worker_direct(node)
            producer.publish(
                {"to": node}, exchange=queue.exchange, routing_key=node, declare=[queue.exchange]
            )
    return {"published": 1 + len(nodes)}


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
    role, arg = sys.argv[1], sys.argv[2]
    if role == "listen":
        result = listen(arg)
    elif role == "announce":
        result = announce(arg.split(","))
    elif role == "drain":
        result = consume(float(arg), until_empty=True)
    else:
        result = publish(float(arg)) if role == "publish" else consume(float(arg))
    print(json.dumps(result), flush=True)
