"""Test settings: PostgreSQL and Redis on 127.0.0.1 unless DATABASE_URL/REDIS_URL say otherwise."""

import os
from pathlib import Path

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postbacks")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("POSTBACKS_ALLOW_PRIVATE_NETWORKS", "true")
os.environ.setdefault("POSTBACKS_SWEEP_SECONDS", "1")
os.environ.setdefault("POSTBACKS_LEASE_MARGIN_SECONDS", "2")
os.environ.setdefault("POSTBACKS_HEARTBEAT_SECONDS", "1")
os.environ.setdefault("POSTBACKS_WORKER_DEAD_SECONDS", "3")
os.environ.setdefault("POSTBACKS_COUNTDOWN_MAX_SECONDS", "2")
os.environ.setdefault("CELERY_WORKER_CONCURRENCY", "2")

from tracker.settings import *  # noqa: F403

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A test database in a file, like the demo's (WAL, busy timeout), not Django's default
    # in-memory shared cache: there, a writer meeting another thread's table lock fails at
    # once ("database table is locked") instead of waiting as on the demo's file.
    # Named after the configured database, so runs against different DATABASE_URLs in one
    # checkout do not share (and break) one test file.
    _name = Path(DATABASES["default"]["NAME"]).stem  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{_name}.sqlite3")}  # noqa: F405
