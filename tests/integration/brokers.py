"""Brokers for integration tests: a private redis-server, and publishing to another broker."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.conftest import _database_url
from tracker.celery import app

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A ``redis-server`` of our own on a spare port, so a test can stop and restart it.

    No persistence unless ``persistent``: a restart loses every queued message, as a crashed
    Redis would. The shared Redis on 6379 is never touched.
    """

    def __init__(
        self, work_dir: Path, port: int | None = None, *, persistent: bool = False
    ) -> None:
        self.work_dir = work_dir
        self.port = port or free_port()
        # persistent: an append-only file synced at every write, kept across restarts.
        self.persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if persistent
            else ["--appendonly", "no"]
        )
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING; raise ``RuntimeError`` if not."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.starts += 1
        log = self.work_dir / f"redis-{self.starts}.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *self.persistence, "--dir", str(self.work_dir)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{log.read_text()}")
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready in {timeout}s:\n{log.read_text()}")

    def stop(self) -> None:
        """SIGTERM the server and wait for it to exit (SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _drop_connection_pools() -> None:
    # Celery caches its connection and producer pools per broker URL on first use; this is
    # what Celery itself runs after a fork so that the next publish connects afresh.
    app._after_fork()


@contextmanager
def publishing_to(broker_url: str, transport_options: dict | None = None) -> Iterator[None]:
    """Within the block, tasks this process enqueues go to ``broker_url``."""
    conf = app.conf
    previous = conf.broker_url, conf.broker_transport_options
    conf.broker_url, conf.broker_transport_options = broker_url, transport_options or {}
    _drop_connection_pools()
    try:
        yield
    finally:
        conf.broker_url, conf.broker_transport_options = previous
        _drop_connection_pools()


def worker_health(
    broker_url: str, *names: str, timeout: float = 5.0
) -> subprocess.CompletedProcess[str]:
    """``manage.py worker_health`` as an operator's probe runs it: a process of its own."""
    command = [sys.executable, "manage.py", "worker_health", "--timeout", str(timeout)]
    for name in names:
        command += ["--worker", name]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _database_url(),  # it checks the database too: the test's own
        "CELERY_BROKER_URL": broker_url,
    }
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout + 30
    )
