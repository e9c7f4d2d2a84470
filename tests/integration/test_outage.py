"""Outages under steady clicks: PostgreSQL stopped, then Redis stopped, each for 10 s, while
visitors click at 15 per second through gunicorn. Every visitor is redirected without waiting
on the stopped server, every click is stored once afterwards, and ``/cv`` during the database
outage answers a JSON 503 with ``Retry-After`` within the pool's wait.

The test runs its own PostgreSQL cluster and Redis (it stops and starts them), a gunicorn web
server and a Celery worker on them, with the click buffer on, as production runs with Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from postbacks.receiver import Receiver
from tests.conftest import WorkerProcess, wait_until
from tests.integration.brokers import RedisServer, free_port
from tests.integration.postgres import PostgresServer

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
RATE = 15  # clicks per second
OUTAGE_SECONDS = 10
COOKIE = "cf_click_id"


@dataclass
class Stack:
    postgres: PostgresServer
    redis: RedisServer
    database_url: str
    base_url: str
    campaign_key: str
    click_id: str  # a click stored before the outages


def _manage(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The stack, made once for the module's two outages (a migration costs ~20 s)."""
    tmp_path = tmp_path_factory.mktemp("outage")
    receiver = Receiver().start()
    postgres = PostgresServer().start()
    redis_server = RedisServer(tmp_path, persistent=True).start()
    web = worker = None
    try:
        database_url = postgres.create_database("tracker")
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "TESTS_XDIST_REDIS_URL": redis_server.url,  # not moved to an xdist worker's db
            "CELERY_BROKER_URL": redis_server.url,
            "TRACKER_CLICK_BUFFER_REDIS_URL": redis_server.url,
            "TRACKER_CLICK_SPOOL_DIR": str(tmp_path / "spool"),
            "VAR_DIR": str(tmp_path / "var"),
        }
        _manage(env, "migrate", "--noinput")
        _manage(env, "demo_setup", "--demo", "--receiver-url", receiver.url)
        with psycopg.connect(database_url) as conn:
            key = conn.execute("SELECT key FROM campaigns_campaign LIMIT 1").fetchone()[0]
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "tracker.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--timeout", "30"],
            cwd=ROOT, env=env, stdout=(tmp_path / "web.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        worker = WorkerProcess(tmp_path, env=env, name="outage")
        worker.start()
        base = f"http://127.0.0.1:{port}"

        def first_click() -> str | None:
            try:  # the first click loads the app's lazy data (geo tables): slow on a busy box
                answer = requests.get(f"{base}/c/{key}", allow_redirects=False, timeout=30)
            except requests.RequestException:
                return None
            return answer.cookies.get(COOKIE) if answer.status_code == 302 else None

        click_id = wait_until(first_click, timeout=60, interval=0.2)
        assert click_id, (tmp_path / "web.log").read_text()[-3000:]
        assert wait_until(lambda: stored(database_url, [click_id]) == 1, timeout=30)
        yield Stack(postgres, redis_server, database_url, base, key, click_id)
    finally:
        if worker is not None:
            worker.stop()
        if web is not None:
            web.terminate()
            web.wait(20)
        redis_server.stop()
        postgres.destroy()
        receiver.stop()


def stored(database_url: str, click_ids: list[str]) -> int:
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM tracker_click WHERE id = ANY(%s::uuid[])", [click_ids]
            ).fetchone()
    except psycopg.OperationalError:
        return -1
    return row[0]


@dataclass
class Visit:
    status: int
    seconds: float
    click_id: str


def steady_clicks(stack: Stack, seconds: float, label: str) -> tuple[list[Visit], threading.Thread]:
    """Visitors at RATE per second for ``seconds``, on a thread; the list fills as they go."""
    visits: list[Visit] = []

    def run() -> None:
        start = time.monotonic()
        for n in range(int(seconds * RATE)):
            time.sleep(max(0.0, start + n / RATE - time.monotonic()))
            began = time.monotonic()
            answer = requests.get(
                f"{stack.base_url}/c/{stack.campaign_key}",
                params={"external_id": f"{label}-{n}"},
                allow_redirects=False,
                timeout=30,
            )
            visits.append(
                Visit(answer.status_code, time.monotonic() - began, answer.cookies.get(COOKIE, ""))
            )

    thread = threading.Thread(target=run)
    thread.start()
    return visits, thread


def summary(visits: list[Visit]) -> str:
    times = sorted(v.seconds for v in visits)
    return (
        f"{len(visits)} visits, p50 {times[len(times) // 2] * 1000:.0f} ms, "
        f"p99 {times[int(len(times) * 0.99)] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
    )


def test_visitors_are_redirected_and_clicks_kept_through_a_database_outage(stack, capsys):
    visits, clicking = steady_clicks(stack, 3 + OUTAGE_SECONDS + 5, "pg")
    time.sleep(3)
    stack.postgres.stop()
    time.sleep(1)
    began = time.monotonic()
    conversion = requests.get(
        f"{stack.base_url}/cv", params={"click_id": stack.click_id, "txid": "T-1"}, timeout=30
    )
    conversion_seconds = time.monotonic() - began
    time.sleep(OUTAGE_SECONDS - 1)
    stack.postgres.start()
    clicking.join()

    with capsys.disabled():
        print(f"\nPostgreSQL outage: {summary(visits)}; /cv {conversion_seconds * 1000:.0f} ms")
    assert [v.status for v in visits] == [302] * len(visits)
    assert max(v.seconds for v in visits) < 1.0  # none waited on the stopped database
    assert (conversion.status_code, conversion.json()["error"]) == (503, "unavailable")
    assert conversion.headers["Retry-After"] == "10"
    assert conversion_seconds < 5.0  # the pool's wait (2 s), not gunicorn's 30 s timeout
    click_ids = [v.click_id for v in visits]
    assert len(set(click_ids)) == len(visits)
    assert wait_until(lambda: stored(stack.database_url, click_ids) == len(visits), timeout=60)
    # Afterwards /cv is answered again, as soon as the pools have reconnected.
    back = time.monotonic()

    def converted() -> bool:
        params = {"click_id": click_ids[-1], "txid": "T-2"}
        return requests.get(f"{stack.base_url}/cv", params=params, timeout=30).status_code == 200

    assert wait_until(converted, timeout=15, interval=0.2)
    with capsys.disabled():
        print(f"/cv answered 200 again {time.monotonic() - back:.1f} s after the clicks were in")


def test_visitors_are_redirected_and_clicks_kept_through_a_redis_outage(stack, capsys):
    visits, clicking = steady_clicks(stack, 3 + OUTAGE_SECONDS + 5, "redis")
    time.sleep(3)
    stack.redis.stop()
    time.sleep(OUTAGE_SECONDS)
    stack.redis.start()
    clicking.join()

    with capsys.disabled():
        print(f"\nRedis outage: {summary(visits)}")
    assert [v.status for v in visits] == [302] * len(visits)
    assert max(v.seconds for v in visits) < 1.0  # none waited on the stopped Redis
    click_ids = [v.click_id for v in visits]
    assert len(set(click_ids)) == len(visits)
    assert wait_until(lambda: stored(stack.database_url, click_ids) == len(visits), timeout=60)
