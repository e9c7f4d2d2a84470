"""The embedded broker of the demo: kombu's file-system transport, made safe for bursts.

kombu's ``filesystem://`` transport (5.7.0, and upstream today) creates a message file, then
writes into it. The lock it takes meanwhile is advisory and the reader never asks for it: a
worker polling the folder can claim the file while it is still empty or half written, and
its JSON decoding error ends the worker (kombu issue #1551). Its exchange tables (the
routing of remote control, broadcasts and every named exchange) have the same window when
created. A burst of wake-ups (a 5,000-row upload) hit it within seconds.

Here every file appears complete or not at all: it is written under a hidden temporary name
in the same folder and renamed (or, for an exchange table that may exist already, linked)
into place. A reader claims a message by renaming it into ``processed_folder``, on the same
file system, so two workers never both get it (kombu moves it to the system's temporary
folder, a copy when that is another file system). A file that is no JSON anyway (a disk
that filled up) is moved aside with an error in the log instead of stopping the worker.

Everything else, fanout included (remote control, ``worker_health``, broadcast queues), is
kombu's. Selected by ``CELERY_BROKER_TRANSPORT`` in ``tracker.settings``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from json import JSONDecodeError
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"  # never a message: kombu only reads names ending in ".<queue>.msg"


def write_new_file(folder: str | Path, data: bytes) -> str:
    """Write ``data`` to a hidden temporary file in ``folder`` and return its path."""
    fd, path = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


class Channel(filesystem.Channel):
    # kombu's filesystem Channel has these signatures; its stubs give AbstractChannel's.
    def _put(self, queue: str, payload: dict, **kwargs: Any) -> None:  # type: ignore[override]
        """Put a message on ``queue``: written aside, then renamed into the queue folder."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        try:
            temp = write_new_file(self.data_folder_out, str_to_bytes(dumps(payload)))
            os.replace(temp, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add a message to {self.data_folder_out}") from exc

    def _get(self, queue: str) -> dict:  # type: ignore[override]
        """Claim the oldest message of ``queue`` (rename), read it and delete it.

        Raises ``queue.Empty`` when there is none.
        """
        suffix = f"{queue}.msg"
        processed = Path(self.processed_folder)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != suffix:
                continue
            claimed = processed / name
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer took it
            except OSError as exc:
                raise ChannelError(f"Cannot claim {name} from {self.data_folder_in}") from exc
            try:
                payload = claimed.read_bytes()
                message = loads(bytes_to_str(payload))
            except OSError as exc:
                raise ChannelError(f"Cannot read the message {claimed}") from exc
            except (JSONDecodeError, UnicodeDecodeError):
                log.error("Broker message %s is no JSON; kept as %s.corrupt", name, claimed)
                claimed.rename(claimed.with_name(claimed.name + ".corrupt"))
                continue
            if not self.store_processed:
                claimed.unlink()
            return message
        raise Empty()

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str | None, queue: str) -> None:
        """Add a binding to ``exchange``'s table; a new table is linked into place whole."""
        file = self._exchange_file(exchange)  # type: ignore[attr-defined]  # not in the stubs
        if not file.exists():
            self.control_folder.mkdir(exist_ok=True)
            row = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
            temp = write_new_file(self.control_folder, str_to_bytes(dumps([row])))
            try:
                os.link(temp, file)  # unlike a rename, never replaces a table made meanwhile
                return
            except OSError:  # made meanwhile (or no hard links here): kombu's way below
                pass
            finally:
                os.unlink(temp)
        # The table exists: kombu updates it in place under an exclusive lock, which its
        # readers take too (shared).
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    """``filesystem://`` with :class:`Channel`; same transport options as kombu's."""

    Channel = Channel
