"""Readiness checks (``/ready``, ``manage.py worker_health``) and the periodic tasks' last runs.

Each check opens a connection of its own with a short timeout, never one of the process's
pool (whose checkout waits up to 30 s for a database that is down), and the checks run
side by side under one deadline (:func:`readiness`), so the answer comes well under a
second while PostgreSQL or Redis is down or unreachable:

- ``database``: a new connection answers ``SELECT 1``.
- ``migrations``: every migration on disk is recorded in ``django_migrations``.
- ``broker``: the Celery broker answers (Redis ``PING``, an AMQP connection; the embedded
  file-system broker: its folder exists).
- ``redis``: the Redis of the cache and wake-up flags answers ``PING``, when it is not the
  broker's.

:func:`task_run_record` (a Celery ``task_postrun`` receiver, wired in ``tracker.apps``)
keeps the last run of each task of ``CELERY_BEAT_SCHEDULE`` in :class:`~tracker.models.TaskRun`.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from kombu import Connection

from tracker.models import TaskRun

logger = logging.getLogger(__name__)

# Seconds all checks together may take (HEALTH_TIMEOUT_SECONDS); each connection gets this
# long to connect too (PostgreSQL's libpq waits at least 2 s, but the answer does not).
DEFAULT_TIMEOUT = 0.5
# The migration that made the table of the periodic tasks' last runs.
TASK_RUN_MIGRATION = ("tracker", "0011_task_run")


@dataclass
class Check:
    """One check's outcome: ``ok``, and ``detail`` (the error, or what was seen) and how
    long it took (``ms``)."""

    name: str
    ok: bool
    detail: str = ""
    ms: int = 0
    seen: datetime | None = None  # database: when a periodic task last ended

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "ms": self.ms}


@dataclass
class Readiness:
    """All checks of one :func:`readiness` call; ``ok`` when every one passed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]

    @property
    def beat_last_run(self) -> datetime | None:
        """When a task of the beat schedule last ended (None: never, or no database)."""
        return next((check.seen for check in self.checks if check.name == "database"), None)


@functools.cache
def migrations_on_disk() -> frozenset[tuple[str, str]]:
    """``(app, name)`` of every migration the code has (read once per process, no DB)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return frozenset(loader.graph.nodes)


def _raw_connection(wrapper: BaseDatabaseWrapper, timeout: float) -> Any:
    """A new DB-API connection to ``wrapper``'s database (never its pool), in autocommit."""
    if wrapper.vendor == "sqlite":
        # mode=rw: a missing file is an error, not a new empty database.
        uri = f"file:{wrapper.settings_dict['NAME']}?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    params = wrapper.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, connect_timeout=max(1, round(timeout)), autocommit=True)


def database_checks(
    wrapper: BaseDatabaseWrapper | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[Check]:
    """``database`` (a new connection answers) and ``migrations`` (none left to apply) on
    ``wrapper`` (default: the ``default`` alias); the database check's ``seen`` is when a
    periodic task last ended (read on the same connection). Never raises."""
    wrapper = wrapper or connections["default"]
    expected = migrations_on_disk()
    started = time.monotonic()
    try:
        raw = _raw_connection(wrapper, timeout)
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            database = Check("database", True, wrapper.vendor, _ms(started))
            cursor.execute("SELECT app, name FROM django_migrations")
            applied = {(app, name) for app, name in cursor.fetchall()}
            if TASK_RUN_MIGRATION in applied:
                cursor.execute(f"SELECT MAX(finished_at) FROM {TaskRun._meta.db_table}")
                database.seen = cursor_timestamp(cursor.fetchone()[0])
        finally:
            raw.close()
    except (DatabaseError, psycopg.Error, sqlite3.Error, OSError) as exc:
        failed = Check("database", False, _error(exc), _ms(started))
        return [failed, Check("migrations", False, "database unreachable", 0)]
    missing = sorted(expected - applied)
    migrations = Check(
        "migrations",
        not missing,
        f"{len(missing)} not applied: " + ", ".join(f"{a}.{n}" for a, n in missing[:5])
        if missing
        else f"{len(expected)} applied",
        _ms(started),
    )
    return [database, migrations]


def cursor_timestamp(value: object) -> datetime | None:
    """A timestamp from a raw cursor: PostgreSQL's as is, SQLite's text (UTC)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if not isinstance(value, datetime):
        return None
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def broker_check(url: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Check:
    """Whether the Celery broker (``url``, default ``CELERY_BROKER_URL``) answers."""
    url = url if url is not None else settings.CELERY_BROKER_URL
    started = time.monotonic()
    try:
        if url.startswith(("redis://", "rediss://")):
            _redis_ping(url, timeout)
        elif url.startswith("filesystem://"):
            folder = str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
            if not Path(folder).is_dir():
                raise OSError(f"no broker folder {folder}")
        else:
            with Connection(url, connect_timeout=timeout) as conn:
                # kombu takes seconds as a float; its stubs say int.
                conn.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]
    except Exception as exc:  # any transport's own errors: the answer names them
        return Check("broker", False, _error(exc), _ms(started))
    return Check("broker", True, url.split("://", 1)[0], _ms(started))


def redis_check(url: str, timeout: float = DEFAULT_TIMEOUT) -> Check:
    """Whether the Redis at ``url`` (cache, wake-up flags) answers ``PING``."""
    started = time.monotonic()
    try:
        _redis_ping(url, timeout)
    except (redis.RedisError, OSError) as exc:
        return Check("redis", False, _error(exc), _ms(started))
    return Check("redis", True, "", _ms(started))


def _redis_ping(url: str, timeout: float) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def redis_urls() -> list[str]:
    """The Redis URLs the web and workers use besides the broker (cache, wake-up flags)."""
    cache = settings.CACHES["default"]
    urls = [settings.POSTBACKS_WAKE_REDIS_URL]
    if cache["BACKEND"].endswith("RedisCache"):
        urls.append(cache["LOCATION"])
    seen = {settings.CELERY_BROKER_URL}
    distinct = []
    for url in urls:
        if url and url not in seen:
            seen.add(url)
            distinct.append(url)
    return distinct


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """This process's check threads (a new pool after a fork)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(8, thread_name_prefix="health"))
        return _pool[1]


def readiness(timeout: float | None = None, *, database: bool = True) -> Readiness:
    """Run every check side by side; what has not answered after ``timeout`` seconds
    (default ``HEALTH_TIMEOUT_SECONDS``) fails as "no answer within ...". ``database``
    False leaves out the database and migrations checks."""
    timeout = settings.HEALTH_TIMEOUT_SECONDS if timeout is None else timeout
    migrations_on_disk()  # read from disk before the clock starts
    jobs: list[tuple[list[str], Callable[[], list[Check]]]] = []
    if database:
        jobs.append((["database", "migrations"], lambda: database_checks(timeout=timeout)))
    jobs.append((["broker"], lambda: [broker_check(timeout=timeout)]))
    jobs += [(["redis"], functools.partial(_one_redis, url, timeout)) for url in redis_urls()]
    deadline = time.monotonic() + timeout
    futures = [(names, _executor().submit(job)) for names, job in jobs]
    result = Readiness()
    for names, future in futures:
        try:
            result.checks += future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            late = f"no answer within {timeout:g} s"
            result.checks += [Check(name, False, late, round(timeout * 1000)) for name in names]
    return result


def _one_redis(url: str, timeout: float) -> list[Check]:
    return [redis_check(url, timeout)]


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


# --- periodic tasks ---------------------------------------------------------------------------


def scheduled_tasks() -> set[str]:
    """Names of the tasks beat sends (``CELERY_BEAT_SCHEDULE``)."""
    return {str(entry["task"]) for entry in settings.CELERY_BEAT_SCHEDULE.values()}


def task_run_record(
    sender: Any = None, task: Any = None, state: str | None = None, retval: Any = None, **_: Any
) -> None:
    """Celery ``task_postrun``: note when a task of the beat schedule ended, and how.

    Never raises: a database down at that moment loses one timestamp, not the task.
    """
    name = getattr(task or sender, "name", "")
    if name not in scheduled_tasks():
        return
    try:
        TaskRun.objects.update_or_create(
            name=name,
            defaults={
                "finished_at": timezone.now(),
                "state": (state or "")[:16],
                "detail": repr(retval)[:500] if retval is not None else "",
            },
        )
    except DatabaseError:
        logger.warning("Last run of %s not recorded", name, exc_info=True)


def task_runs() -> list[TaskRun]:
    """The last run of each periodic task (one row per task that ever ran)."""
    return list(TaskRun.objects.all())
