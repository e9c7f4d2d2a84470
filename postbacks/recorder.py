"""The recorder thread of a dispatcher: finished attempts written in batches.

The dispatcher's send slots hand each finished attempt to :class:`Recorder`, which writes
them ``batch`` at a time (or after ``poll`` seconds) through the dispatcher's ``record``,
on its own thread and database connection, so sending never waits for the database.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Protocol

from django.db import connection

from postbacks.claims import Finished

# The dispatcher's logger: a failed write is one of its log lines.
logger = logging.getLogger("postbacks.dispatcher")


class Records(Protocol):
    """What records a batch of finished attempts; returns how many were recorded."""

    def record(self, finished: list[Finished]) -> int: ...


class Recorder:
    """A thread that records finished attempts in batches (``dispatcher.record``, see
    :meth:`postbacks.dispatcher.Dispatcher.record`).

    A batch is written once ``batch`` results have come or the oldest has waited ``poll``
    seconds. :meth:`close` writes what is left and returns how many were recorded.
    """

    def __init__(self, dispatcher: Records, poll: float, batch: int) -> None:
        self.dispatcher = dispatcher
        self.poll = poll
        self.batch = batch
        self.recorded = 0
        self._items: queue.SimpleQueue[Finished | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def add(self, item: Finished) -> None:
        self._items.put(item)

    def close(self) -> int:
        self._items.put(None)
        self._thread.join()
        return self.recorded

    def _run(self) -> None:
        try:
            done = False
            while not done:
                first = self._items.get()
                if first is None:
                    break
                pending, deadline = [first], time.monotonic() + self.poll
                while len(pending) < self.batch:
                    try:
                        item = self._items.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if item is None:
                        done = True
                        break
                    pending.append(item)
                self._write(pending)
        finally:
            connection.close()

    def _write(self, pending: list[Finished]) -> None:
        try:
            self.recorded += self.dispatcher.record(pending)
        except Exception:
            # The deliveries stay "sending" under this worker: the sweeper takes them back
            # when their lease ends, logs the attempts as lost and they are sent again.
            logger.exception("Could not record %d postback attempt(s)", len(pending))
            connection.close()
