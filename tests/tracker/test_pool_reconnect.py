"""PostgreSQL drops the web server's connections (``pg_terminate_backend``, as a failover or
a restart does) while clicks and ``/cv`` postbacks arrive: none is refused or written twice,
every postback is in the inbound log.

The web server is gunicorn on the test database (threads sharing each process's psycopg
connection pool, as in production), on a free port.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection

from tests import factories
from tests.api.conftest import client_with, make_token
from tests.conftest import _database_url, wait_until
from tests.integration.brokers import free_port
from tracker import db, ingest, services
from tracker.backends.postgresql import base as check
from tracker.ingest import Inbound
from tracker.models import Click, Conversion, InboundRequest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The web server's connections carry this name (libpq's PGAPPNAME), so that the test drops
# them, and only them: the test's own connection and any Celery worker's stay.
APP_NAME = "pool-reconnect-web"
VISITORS = 300  # each sends /c, then /cv
KILL_AFTER = (60, 140, 220)  # visitors done before each round of terminations


@pytest.fixture
def web(transactional_db, tmp_path):
    """gunicorn (2 processes of 4 threads) serving the tracker from the test database."""
    assert settings.DATABASES["default"]["OPTIONS"]["pool"]  # the settings the server reads
    log = tmp_path / "gunicorn.log"
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _database_url(),
        "VAR_DIR": str(tmp_path / "var"),
        "PGAPPNAME": APP_NAME,
    }
    command = [
        sys.executable, "-m", "gunicorn", "tracker.wsgi", "--bind", f"127.0.0.1:{port}",
        "--workers", "2", "--threads", "4", "--worker-class", "gthread",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()}")
        try:
            return requests.get(f"{base}/cv", timeout=10).status_code == 400
        except (requests.ConnectionError, requests.Timeout):
            return False

    try:
        assert wait_until(up, timeout=60), log.read_text()
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def web_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [APP_NAME],
        )
        return cursor.fetchone()[0]


def terminate_web_backends() -> int:
    """Drop every connection of the web server to the test database; how many were."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = %s",
            [APP_NAME],
        )
        return cursor.fetchone()[0]


def test_clicks_and_conversions_survive_dropped_pool_connections(web):
    base, log = web
    campaign = factories.campaign()
    warm = factories.click(campaign, external_id="warm-up")
    InboundRequest.objects.all().delete()  # the readiness probes' rows

    # The pool keeps connections open between requests (without it, Django closes each
    # request's connection): those idle connections are the ones a failover leaves dead.
    for n in range(8):
        requests.get(f"{base}/cv", params={"click_id": warm.pk, "txid": f"warm-{n}"}, timeout=10)
    assert web_backends() > 0

    def visit_and_convert(n: int) -> tuple[int, int, dict]:
        """A visitor's click on /c, then the network's postback for it on /cv."""
        visit = requests.get(
            f"{base}/c/{campaign.key}", params={"external_id": f"ext-{n}"},
            allow_redirects=False, timeout=30,
        )  # fmt: skip
        if visit.status_code != 302:
            return visit.status_code, 0, {}
        click_id = parse_qs(urlsplit(visit.headers["Location"]).query)["s2"][0]
        answer = requests.get(
            f"{base}/cv", params={"click_id": click_id, "txid": f"T-{n}", "payout": "1.5"},
            timeout=30,
        )  # fmt: skip
        return visit.status_code, answer.status_code, answer.json()

    terminated = []
    with ThreadPoolExecutor(8) as clients:
        futures = [clients.submit(visit_and_convert, n) for n in range(VISITORS)]
        for done, future in enumerate(futures, start=1):
            future.result()
            if done in KILL_AFTER:
                terminated.append(terminate_web_backends())
        answers = [future.result() for future in futures]

    assert all(terminated), terminated  # each round dropped live connections
    refused = [answer for answer in answers if answer[:2] != (302, 200)]
    assert not refused, (len(refused), refused[:3], log.read_text()[-3000:])
    assert all(body["status"] == "ok" for _, _, body in answers)
    assert Click.objects.filter(external_id__startswith="ext-").count() == VISITORS
    assert Conversion.objects.filter(txid__startswith="T-").count() == VISITORS
    logged = InboundRequest.objects.filter(query__contains="txid=T-")
    assert logged.count() == VISITORS
    assert set(logged.values_list("response_status", flat=True)) == {200}


# In process: the connection dropped at chosen moments (the test's own process and pool).


def drop_connection() -> None:
    """Terminate the backend of this thread's connection, and wait until it is gone."""
    pid = connection.connection.info.backend_pid
    with psycopg.connect(_database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


@pytest.fixture
def click(transactional_db):
    return factories.click()


def s2s(**params: str) -> Inbound:
    return Inbound(endpoint="/cv", http_method="GET", query=urlencode(params), ip="127.0.0.1")


def test_a_refusal_is_logged_on_a_fresh_connection(click):
    """A 400 whose log row meets a dropped connection: written on a fresh one."""
    params = {"click_id": "not-a-click-id"}
    connection.ensure_connection()
    drop_connection()

    result = ingest.conversion_ingest(params, s2s(**params))

    assert (result.status, result.body["error"]) == (400, "invalid_click_id")
    assert result.log is not None
    assert InboundRequest.objects.get().error_code == "invalid_click_id"


def test_a_conversion_whose_commit_is_cut_is_run_again(click, monkeypatch):
    """The connection dropped once everything is written but before COMMIT: nothing was
    written, so the conversion is registered on a fresh connection, once."""
    original, cuts = ingest.record, []

    def cut_before_commit(*args, strict: bool = False, **kwargs):
        # The log row is the transaction's last write.
        result = original(*args, strict=strict, **kwargs)
        if strict and not cuts:
            cuts.append(result.log.pk)
            drop_connection()
        return result

    monkeypatch.setattr(ingest, "record", cut_before_commit)
    params = {"click_id": str(click.pk), "txid": "T-1", "payout": "2.5"}

    result = ingest.conversion_ingest(params, s2s(**params))

    assert cuts and (result.status, result.body["status"]) == (200, "ok")
    assert Conversion.objects.get().txid == "T-1"
    assert InboundRequest.objects.get().pk == result.log.pk != cuts[0]


def test_a_503_after_the_retry_is_logged(click, monkeypatch, caplog):
    """Dropped again on every retry's connection: 503, with its log row and an error line."""
    original = ingest.services.click_for_conversion

    def dropped(*args, **kwargs):
        drop_connection()
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest.services, "click_for_conversion", dropped)
    params = {"click_id": str(click.pk), "txid": "T-1"}

    with caplog.at_level(logging.WARNING, logger="tracker.ingest"):
        result = ingest.conversion_ingest(params, s2s(**params))

    assert (result.status, result.body["error"]) == (503, "unavailable")
    assert result.extra["Retry-After"] == str(ingest.RETRY_AFTER_SECONDS)
    assert not Conversion.objects.exists()
    row = InboundRequest.objects.get()
    assert (row.response_status, row.error_code, row.click_id) == (
        503,
        "unavailable",
        str(click.pk),
    )
    messages = [record.getMessage() for record in caplog.records]
    assert sum("retried on a fresh database connection" in m for m in messages) == db.RECONNECTS
    assert any("503 unavailable" in m and str(click.pk) in m for m in messages)


def test_a_click_whose_connection_was_dropped_is_saved_once(click):
    campaign = services.campaign_for_click(click.campaign.key)  # loaded as /c loads it
    offer = campaign.choose_offer()
    drop_connection()

    visit, _ = services.click_record(
        campaign, offer, {"external_id": "ext-9"}, ip="127.0.0.1", user_agent="", referrer=""
    )

    assert Click.objects.get(external_id="ext-9").pk == visit.pk


def test_an_api_conversion_whose_connection_was_dropped_is_registered_once(click, monkeypatch):
    """The REST API's conversion create goes through the same retried transaction."""
    client = client_with(make_token(superuser=True)[1])
    original, drops = ingest.services.click_for_conversion, []

    def dropped_once(*args, **kwargs):
        if not drops:
            drops.append(1)
            drop_connection()
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest.services, "click_for_conversion", dropped_once)

    answer = client.post(
        "/api/v1/conversions/", {"click_id": str(click.pk), "txid": "T-1"}, format="json"
    )

    assert drops and answer.status_code == 201, answer.content
    conversion_id = answer.json()["conversion_id"]
    assert Conversion.objects.get().pk == conversion_id
    assert InboundRequest.objects.get().conversion_id == conversion_id


# The pool's check (tracker/backends/postgresql): the socket first, a query only when it
# has something to read.


def test_the_pool_check_runs_no_query_on_a_live_idle_connection(transactional_db, monkeypatch):
    queried = []
    monkeypatch.setattr(check.ConnectionPool, "check_connection", queried.append)
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        check.check_connection(conn)
    assert queried == []


def test_the_pool_check_refuses_a_connection_the_server_ended(transactional_db):
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        with psycopg.connect(_database_url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", [conn.info.backend_pid])
        with pytest.raises(psycopg.OperationalError):
            check.check_connection(conn)


def test_the_pool_check_refuses_a_connection_left_in_a_transaction(transactional_db):
    with psycopg.connect(_database_url()) as conn:
        conn.execute("SELECT 1")  # opens a transaction (autocommit off)
        with pytest.raises(psycopg.OperationalError, match="not idle"):
            check.check_connection(conn)
