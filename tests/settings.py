"""Test settings: PostgreSQL and Redis on 127.0.0.1 unless DATABASE_URL/REDIS_URL say otherwise."""

import os
from pathlib import Path

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postbacks")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_db_of_this_xdist_worker(url: str, worker: str, offset: int = 0) -> str:
    """``url`` on a Redis database of the xdist worker's own (gw0 keeps the configured one,
    gw1 the next, and so on, counting down from the configured one past db 15): each
    worker's Celery broker, wake-up flags and cache stay apart, as its database does.
    ``offset`` (TESTS_REDIS_DB_OFFSET) moves a run past the dbs of another one running
    beside it: ``make test`` runs the SQLite run beside the slow tiers' three processes, its
    gw0 on the configured db + 3."""
    base, _, db = url.rpartition("/")
    if not worker.startswith("gw") or not db.isdigit():
        return url
    index, number = int(worker[2:]) + offset, int(db)
    number = number + index if number + index <= 15 else number - index
    return f"{base}/{number}"


if os.environ.get("PYTEST_XDIST_WORKER") and "TESTS_XDIST_REDIS_URL" not in os.environ:
    # Written back to the environment, where the worker's subprocesses (Celery, gunicorn)
    # read it; they inherit PYTEST_XDIST_WORKER too, and TESTS_XDIST_REDIS_URL tells them
    # the db is already the worker's own.
    os.environ["REDIS_URL"] = _redis_db_of_this_xdist_worker(
        os.environ["REDIS_URL"],
        os.environ["PYTEST_XDIST_WORKER"],
        int(os.environ.get("TESTS_REDIS_DB_OFFSET", "0")),
    )
    os.environ["TESTS_XDIST_REDIS_URL"] = os.environ["REDIS_CACHE_URL"] = os.environ["REDIS_URL"]
# The cache on the worker's own Redis db too (production puts it on the next one, which here
# is another xdist worker's).
os.environ.setdefault("REDIS_CACHE_URL", os.environ["REDIS_URL"])
os.environ.setdefault("POSTBACKS_ALLOW_PRIVATE_NETWORKS", "true")
os.environ.setdefault("POSTBACKS_SWEEP_SECONDS", "1")
os.environ.setdefault("POSTBACKS_LEASE_MARGIN_SECONDS", "2")
os.environ.setdefault("POSTBACKS_HEARTBEAT_SECONDS", "1")
os.environ.setdefault("POSTBACKS_WORKER_DEAD_SECONDS", "3")
os.environ.setdefault("POSTBACKS_COUNTDOWN_MAX_SECONDS", "2")
os.environ.setdefault("CELERY_WORKER_CONCURRENCY", "2")
# The click buffer is off (each /c writes its click, as the tests read it at once) unless a
# test turns it on: tests/tracker/test_click_buffer.py, with its own worker.
os.environ.setdefault("TRACKER_CLICK_BUFFER_REDIS_URL", "")
# /ready's checks each open a connection: on a loaded test machine that can take longer than
# production's 0.5 s deadline. The deadline itself is tested with a check that never ends.
os.environ.setdefault("HEALTH_TIMEOUT_SECONDS", "5")

from tracker.settings import *  # noqa: E402, F403

if DATABASES["default"]["ENGINE"] == "tracker.backends.postgresql":  # noqa: F405
    # The project's backend, emptying the database between transactional tests with DELETE
    # instead of TRUNCATE (a second less per test; see tests/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "tests.postgresql"  # noqa: F405
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A test database in a file, like the demo's (WAL, busy timeout), not Django's default
    # in-memory shared cache: there, a writer meeting another thread's table lock fails at
    # once ("database table is locked") instead of waiting as on the demo's file.
    # Named after the configured database, so runs against different DATABASE_URLs in one
    # checkout do not share (and break) one test file.
    _name = Path(DATABASES["default"]["NAME"]).stem  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{_name}.sqlite3")}  # noqa: F405

# The tests make many users and log them in: PBKDF2's deliberate cost (a few hundred ms per
# hash on a small machine) buys nothing here, and no test is about the hash itself.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# `make migrations-check` (django-migration-linter: pyproject.toml [tool.django_migration_linter])
INSTALLED_APPS = [*INSTALLED_APPS, "django_migration_linter"]  # noqa: F405
