"""Production settings come from the environment: the one README documents passes Django's
deployment checks, and the cache keeps off the broker's Redis database."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tracker.settings import redis_url_next_db

pytestmark = pytest.mark.unit

# The line that opens README's production environment block.
ENV_BLOCK_TITLE = "# /srv/postbacks/.env: the production environment"


def documented_production_environment() -> dict[str, str]:
    """The variables of README's production ``.env`` block, with a real secret key for its
    placeholder."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(ENV_BLOCK_TITLE))
    variables = {}
    for line in lines[start + 1 :]:
        if line.startswith("```"):
            break
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.partition("=")
        variables[name] = value
    assert variables["SECRET_KEY"].startswith("<"), "a placeholder, never a key"
    variables["SECRET_KEY"] = secrets.token_urlsafe(50)
    return variables


def test_check_deploy_is_clean_with_the_documented_environment(tmp_path):
    production = documented_production_environment()
    assert {"SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER"} <= set(
        production
    )
    # Nothing of the test run's own environment (DEBUG, test databases) leaks in; no .env in
    # the checkout is read over it either (the process environment wins).
    kept = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    environment = {
        **kept,
        **production,
        "DJANGO_SETTINGS_MODULE": "tracker.settings",
        "VAR_DIR": str(tmp_path),
        "DEBUG": "false",
    }
    run = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "System check identified no issues (0 silenced)." in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("broker", "cache"),
    [
        ("redis://redis.internal:6379/0", "redis://redis.internal:6379/1"),
        ("redis://redis.internal:6379", "redis://redis.internal:6379/1"),
        ("redis://:secret@redis.internal/15", "redis://:secret@redis.internal/14"),
        ("rediss://r:6380/3?ssl_cert_reqs=none", "rediss://r:6380/4?ssl_cert_reqs=none"),
    ],
)
def test_the_cache_defaults_to_the_broker_s_next_redis_database(broker, cache):
    assert redis_url_next_db(broker) == cache
