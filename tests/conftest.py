"""Shared fixtures: local HTTP receivers and a real Celery worker process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from postbacks.receiver import Receiver
from postbacks.services import rules_cache_clear
from tracker.currency import rates_cache_clear

RUNNING_WORKERS: set[WorkerProcess] = set()  # started and not stopped by the tests

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _flush_retried_on_deadlock():
    """Empty the database again when PostgreSQL picks the emptying as a deadlock's victim.

    A transactional test ends with a TRUNCATE of every table, while the session's Celery
    worker keeps writing (heartbeats, the sweeper, a last attempt): the two can lock the
    tables in opposite orders, and PostgreSQL aborts the TRUNCATE. Left in place, the rows
    would break the next test; tried again a moment later, the TRUNCATE goes through."""
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(5):
            try:
                return original(self)
            except Exception as exc:
                cause: BaseException | None = exc
                while cause is not None and "deadlock detected" not in str(cause):
                    cause = cause.__cause__
                if cause is None or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = teardown
    yield
    TransactionTestCase._fixture_teardown = original


@pytest.fixture(autouse=True)
def _fresh_rules_cache():
    """Rules and rates cached by an earlier test may have been rolled back with it."""
    rules_cache_clear()
    rates_cache_clear()


@pytest.fixture
def receiver():
    """An HTTP receiver on 127.0.0.1 playing the traffic source; records what it gets."""
    server = Receiver().start()
    yield server
    server.stop()


def _database_url() -> str:
    db = settings.DATABASES["default"]
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def stop_running_workers() -> None:
    """Stop every test worker process still running (the ``worker`` fixture starts the
    session's again): a test that claims deliveries itself would race it for them."""
    for process in list(RUNNING_WORKERS):
        process.stop()


class WorkerProcess:
    """``celery -A tracker worker -B`` as a real subprocess on the test database.

    ``env`` overrides the worker's environment (e.g. ``{"CELERY_BROKER_URL": "amqp://..."}``
    to run it on another broker); ``name`` prefixes its node name, ``<name><starts>@<host>``.
    """

    def __init__(
        self, log_dir: Path, *, env: dict[str, str] | None = None, name: str = "test"
    ) -> None:
        self.log_dir = log_dir
        self.env_override = dict(env or {})
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.log_path = log_dir / "worker-0.log"
        self.starts = 0

    @property
    def hostname(self) -> str:
        """The node name of the current (or last) run, as remote control addresses it."""
        return f"{self.name}{self.starts}@{socket.gethostname()}"

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        RUNNING_WORKERS.add(self)
        self.log_path = self.log_dir / f"worker-{self.starts}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": _database_url(),
            "VAR_DIR": str(self.log_dir / "var"),
            # Each test makes its own rules, then the worker plans deliveries (uploads):
            # no per-process rules cache carried over from the previous test.
            "POSTBACKS_RULES_CACHE_SECONDS": "0",
            **self.env_override,
        }
        command = [
            sys.executable, "-m", "celery", "-A", "tracker", "worker", "-B",
            "-Q", "postbacks,celery", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", "-n", f"{self.name}{self.starts}@%h",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Worker exited:\n{self.log_path.read_text()}")
            if " ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"Worker not ready in {timeout}s:\n{self.log_path.read_text()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker and its children (embedded beat): no chance to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        RUNNING_WORKERS.discard(self)
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def _worker_process(django_db_setup, tmp_path_factory):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    worker = WorkerProcess(tmp_path_factory.mktemp("worker"))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def worker(_worker_process, transactional_db):
    """A running Celery worker (restarted if a previous test killed it).

    After the test, waits (at most 15 s) until the worker writes nothing more: no delivery
    is being sent and no upload is being imported. The database is emptied next, and a
    TRUNCATE meeting the worker's write of a last attempt deadlocks, which leaves the rows
    to the next test."""
    if not _worker_process.alive:
        _worker_process.start()
    yield _worker_process
    if _worker_process.alive:
        from postbacks.models import Delivery
        from tracker.models import ConversionUpload

        def quiet() -> bool:
            return not (
                Delivery.objects.filter(status=Delivery.Status.SENDING).exists()
                or ConversionUpload.objects.filter(state=ConversionUpload.State.RUNNING).exists()
            )

        wait_until(quiet, timeout=15)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()
