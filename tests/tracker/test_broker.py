"""The embedded broker's transport (tracker.broker) on its own: messages and exchange tables
written whole, a message file that is no JSON set aside instead of ending the worker."""

from __future__ import annotations

import logging
import uuid

import pytest
from kombu import Connection, Exchange, Queue


@pytest.fixture
def broker(tmp_path):
    """A connection to the transport on a fresh folder, and a queue of a new name (kombu
    remembers the bindings a process declared, across connections)."""
    for sub in ("queue", "processed", "control"):
        (tmp_path / sub).mkdir()
    options = {
        "data_folder_in": str(tmp_path / "queue"),
        "data_folder_out": str(tmp_path / "queue"),
        "processed_folder": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),
    }
    name = f"q{uuid.uuid4().hex}"
    with Connection(
        "filesystem://", transport="tracker.broker:Transport", transport_options=options
    ) as connection:
        yield connection, Queue(name, Exchange(name), routing_key=name), tmp_path


def publish(connection: Connection, queue: Queue, body: dict) -> None:
    connection.Producer().publish(
        body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue]
    )


def test_messages_round_trip_and_leave_no_file_behind(broker):
    connection, queue, folder = broker
    publish(connection, queue, {"n": 1})
    publish(connection, queue, {"n": 2})
    channel = connection.default_channel
    got = [channel.basic_get(queue.name, no_ack=True).decode() for _ in range(2)]
    assert sorted(body["n"] for body in got) == [1, 2]  # FIFO only to the millisecond
    assert channel.basic_get(queue.name, no_ack=True) is None
    assert list((folder / "queue").iterdir()) == []
    assert list((folder / "processed").iterdir()) == []
    table = (folder / "control" / f"{queue.name}.exchange").read_text()
    assert table == f'[["{queue.name}", "", "{queue.name}"]]'


def test_a_message_file_that_is_no_json_is_set_aside(broker, caplog):
    connection, queue, folder = broker
    broken = f"0_half-written.{queue.name}.msg"  # sorts first: names start with a time
    (folder / "queue" / broken).write_bytes(b'{"half')
    publish(connection, queue, {"n": 1})
    with caplog.at_level(logging.ERROR, logger="tracker.broker"):
        message = connection.default_channel.basic_get(queue.name, no_ack=True)
    assert message.decode() == {"n": 1}
    assert [path.name for path in (folder / "processed").iterdir()] == [f"{broken}.corrupt"]
    assert f"{broken} is no JSON" in caplog.text
