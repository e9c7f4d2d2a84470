"""Shared fixtures: local HTTP receivers and a real Celery worker process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from itertools import zip_longest
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import hypothesis
import pytest
import redis
from _pytest.mark.expression import Expression
from django.conf import settings
from django.db import connection

from postbacks.receiver import Receiver
from postbacks.services import rules_cache_clear
from tests import factories
from tracker.currency import rates_cache_clear

# Hypothesis: the "ci" profile (under CI=true, as .ci/run sets) runs every property test with
# the example counts written in it; "dev" (elsewhere) a quarter of them, for a quicker inner
# loop. HYPOTHESIS_PROFILE=ci|dev chooses. Example counts in tests go through examples().
CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
hypothesis.settings.register_profile("ci", max_examples=100, deadline=None, print_blob=True)
hypothesis.settings.register_profile("dev", max_examples=25, deadline=None)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev")
hypothesis.settings.load_profile(HYPOTHESIS_PROFILE)


def examples(count: int) -> int:
    """``count`` Hypothesis examples under the "ci" profile; a quarter (at least 10) under
    "dev"."""
    return count if HYPOTHESIS_PROFILE == "ci" else max(10, count // 4)


RUNNING_WORKERS: set[WorkerProcess] = set()  # started and not stopped by the tests

ROOT = Path(__file__).resolve().parent.parent

# The suite's tiers, by marker (``make test`` runs them all; ``make test-fast`` the first two):
#   unit         no database;                                   in parallel (pytest-xdist)
#   database     the test database, no worker process;          in parallel (pytest-xdist)
#   integration  a Celery worker process, live servers, receivers over real HTTP
#   chaos        worker kills and broker restarts under load (tests/integration/test_chaos.py)
#   broker       a broker restarted or swapped (a Redis restart, RabbitMQ)
#   browser      headless Chromium through Playwright (tests/browser)
#   fuzz         schemathesis against a live server (tests/api/test_fuzz.py)
# A test gets its tier here, from where it lives and what it uses, unless it names one.
SLOW_TIERS = ("integration", "chaos", "broker", "browser", "fuzz")
TIER_OF_FILE = {
    "tests/integration/test_chaos.py": "chaos",
    "tests/integration/test_takeover.py": "chaos",
    "tests/integration/test_broker_restart.py": "broker",
    "tests/integration/test_rabbitmq.py": "broker",
    "tests/api/test_fuzz.py": "fuzz",
}
TIER_OF_FOLDER = {"tests/browser": "browser", "tests/integration": "integration"}
INTEGRATION_FIXTURES = {"worker", "_worker_process", "live_server"}
DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under an ``-m`` of tier names joined by ``or``/``and`` (``make test``'s first run:
    "unit or database"), the folders and files whose path gives their tests a slow tier
    (tests/integration, tests/browser, the fuzz file) are not even imported when the
    expression leaves every slow tier out: each xdist process collects every test, and the
    fuzz module alone builds the API's schema. Those tests run in the slow tiers' run."""
    words = set(re.findall(r"\w+", config.option.markexpr or ""))
    if not words or words - {"and", "or", "unit", "database", *SLOW_TIERS}:
        return None
    try:
        path = collection_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None
    if path not in TIER_OF_FILE and path not in TIER_OF_FOLDER:
        return None
    expression = Expression.compile(config.option.markexpr)
    return not expression.evaluate(lambda name, **kwargs: name in SLOW_TIERS) or None


def _tier(item: pytest.Item) -> str:
    path = Path(str(item.path)).resolve().relative_to(ROOT).as_posix()
    if path in TIER_OF_FILE:
        return TIER_OF_FILE[path]
    for folder, tier in TIER_OF_FOLDER.items():
        if path.startswith(folder + "/"):
            return tier
    names = {mark.name for mark in item.iter_markers()}
    for tier in SLOW_TIERS:
        if tier in names:
            return tier
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & INTEGRATION_FIXTURES:
        return "integration"
    if "django_db" in names or fixtures & DATABASE_FIXTURES:
        return "database"
    return "unit"


# The longest tests of the slow tiers (a minute down to ~10 s), started first and in this
# order, so that none of them is left for the end of a parallel run, going on alone while
# the other processes have finished. ``make test`` hands the slow tiers out one test at a
# time (pytest-xdist's --maxschedchunk 1): each process starts with the next two tests in
# line, then takes the next one whenever it finishes one. So that the longest four go to
# four different processes, each is followed by one of the other tests.
LONGEST_FIRST = (
    "tests/integration/test_outage.py::",
    "tests/integration/test_chaos.py::",
    "tests/integration/test_demo.py::test_demo_survives_a_burst_and_a_killed_worker",
    "tests/integration/test_broker_restart.py::test_redis_restart_with_postbacks_in_flight",
    "tests/integration/test_scaling.py::",
    "tests/tracker/test_pool_reconnect.py::test_clicks_and_conversions_survive_dropped_pool_",
    "tests/integration/test_demo.py::",
    "tests/integration/test_rabbitmq.py::",
    "tests/integration/test_broker_restart.py::",
    "tests/browser/",
    "tests/integration/test_click_buffer_worker.py::",
    "tests/integration/test_takeover.py::",
    "tests/integration/test_engine.py::",
    "tests/integration/test_metrics.py::",
)
EACH_ITS_OWN_PROCESS = 4


def _rank(item: pytest.Item) -> int:
    for rank, prefix in enumerate(LONGEST_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = set()
    for item in items:
        tier = _tier(item)
        if not item.get_closest_marker(tier):
            item.add_marker(getattr(pytest.mark, tier))
        if tier in SLOW_TIERS:
            slow.add(item)
    longest = sorted((item for item in items if _rank(item) < len(LONGEST_FIRST)), key=_rank)
    # The spacers are slow-tier tests too: -m deselects after this hook.
    spacers = [i for i in items if i in slow and _rank(i) == len(LONGEST_FIRST)]
    spacers = spacers[: min(EACH_ITS_OWN_PROCESS, len(longest))]
    first = [item for pair in zip_longest(longest, spacers) for item in pair if item is not None]
    placed = set(first)
    items[:] = first + [item for item in items if item not in placed]


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
    to run it on another broker); ``name`` prefixes its node name, ``<name><starts>@<host>``;
    ``beat`` False leaves out the embedded beat (``-B``).
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        name: str = "test",
        beat: bool = True,
    ) -> None:
        self.log_dir = log_dir
        self.env_override = dict(env or {})
        self.name = name
        self.beat = beat
        self.proc: subprocess.Popen | None = None
        self.log_path = log_dir / "worker-0.log"
        self.starts = 0
        self.paused = False
        # Its PostgreSQL connections carry this name (libpq's PGAPPNAME): pause() looks
        # them up in pg_stat_activity.
        self.app_name = f"test-worker-{os.getpid()}-{name}-{id(self)}"

    @property
    def metrics_dir(self) -> Path:
        """Where its processes write their Prometheus counters (kept across restarts)."""
        return self.log_dir / "prometheus"

    @property
    def hostname(self) -> str:
        """The node name of the current (or last) run, as remote control addresses it."""
        return f"{self.name}{self.starts}@{socket.gethostname()}"

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        self.paused = False
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
            "PGAPPNAME": self.app_name,
            # prometheus-client's multiprocess mode: the worker's counters, for /metrics.
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            **self.env_override,
        }
        command = [
            sys.executable, "-m", "celery", "-A", "tracker", "worker",
            *(["-B"] if self.beat else []),
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
        self.paused = False

    def pause(self, timeout: float = 30.0) -> None:
        """Freeze the worker and its children (SIGSTOP) at a moment when none of its
        database connections is inside a transaction or a statement: frozen, it neither
        reads nor writes, holds no lock, and the test database can be emptied under it.
        Frozen mid-transaction (a heartbeat, a sweep), it is let go on and tried again."""
        if not self.alive or self.paused:
            return
        deadline = time.monotonic() + timeout
        while True:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            self.paused = True
            if wait_until(self._frozen, timeout=5, interval=0.01) and not self._in_database():
                return
            self.resume()
            if time.monotonic() > deadline:
                raise RuntimeError(f"Worker never paused outside a transaction in {timeout}s")
            time.sleep(0.02)

    def resume(self) -> None:
        """Let a paused worker run again (SIGCONT)."""
        if self.paused and self.alive:
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def _frozen(self) -> bool:
        """Every process of the worker's group is stopped (state ``T`` in /proc)."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == self.proc.pid and fields[0] not in ("T", "t", "Z", "X"):
                return False
        return True

    def _in_database(self, *, connected: bool = False) -> bool:
        """One of the worker's connections is in a transaction or running a statement
        (with ``connected``: is open at all). Asked on a connection of its own to the
        server's ``postgres`` database: outside the test's transaction (pg_stat_activity
        is a snapshot per transaction) and outside pytest-django's guard (a session or
        module fixture may stop the worker)."""
        db = settings.DATABASES["default"]
        if connection.vendor != "postgresql":
            return False
        import psycopg

        busy = "" if connected else " AND state IS DISTINCT FROM 'idle'"
        with psycopg.connect(
            host=db["HOST"] or None,
            port=db["PORT"] or None,
            user=db["USER"] or None,
            password=db["PASSWORD"] or None,
            dbname="postgres",
            autocommit=True,
        ) as server:
            row = server.execute(
                f"SELECT count(*) FROM pg_stat_activity WHERE application_name = %s{busy}",
                [self.app_name],
            ).fetchone()
        return row[0] > 0

    def stop(self) -> None:
        RUNNING_WORKERS.discard(self)
        self.resume()
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        # Stopped means gone from the database too: its pool processes may outlive the main
        # one by a moment, and the test database cannot be dropped while they are connected.
        wait_until(lambda: not self._in_database(connected=True), timeout=10, interval=0.05)


@pytest.fixture(scope="session")
def platforms():
    """A receiver playing the Telegram Bot API, Slack and Discord for the whole session
    (tests/integration/test_telegram.py and test_chat_webhooks.py set its ``responder``): the
    session's worker starts with it as its Bot API base URL and webhook prefixes (settings
    it reads from its environment), so those modules need no worker restarted for them. One
    server for the session, too, because the worker keeps its connections to it alive."""
    server = Receiver().start()
    yield server
    server.stop()


def platform_settings(url: str) -> dict[str, str]:
    """The worker's environment that sends Telegram, Slack and Discord messages to ``url``."""
    return {
        "POSTBACKS_TELEGRAM_BASE_URL": url,
        "POSTBACKS_SLACK_WEBHOOK_PREFIXES": f"{url}/services/",
        "POSTBACKS_DISCORD_WEBHOOK_PREFIXES": f"{url}/api/webhooks/",
    }


@pytest.fixture(scope="session")
def _worker_process(django_db_setup, platforms, tmp_path_factory):
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    worker = WorkerProcess(tmp_path_factory.mktemp("worker"), env=platform_settings(platforms.url))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def worker(_worker_process, transactional_db):
    """A running Celery worker (restarted if a previous test killed it, let go if paused).

    After the test, waits (at most 15 s) until the worker has nothing more to do: no
    delivery is being sent and no upload is being imported; then pauses it outside any
    transaction. The database is emptied next (a TRUNCATE of every table), and a worker
    still reading or writing between tests would meet it in a deadlock, or leave rows to the
    next test."""
    if not _worker_process.alive:
        _worker_process.start()
    _worker_process.resume()
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
        _worker_process.pause()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def settled(**delivery_filter):
    """A predicate for :func:`wait_until`: the deliveries matching ``delivery_filter`` exist
    and every one has reached a terminal status (nothing scheduled or being sent)."""

    def check() -> bool:
        from postbacks.models import Delivery

        rows = Delivery.objects.filter(**delivery_filter)
        return rows.exists() and not rows.filter(status__in=["scheduled", "sending"]).exists()

    return check


def worker_swept(timeout: float = 30.0) -> bool:
    """Wait until the live worker has run a whole maintenance round begun after this call:
    a heartbeat written after now, then the sweep that follows it (done once the next
    heartbeat is written). Whatever was due by now has then been claimed or woken; with
    every delivery settled, the worker is quiet. True once seen, False after ``timeout``."""
    from django.db.models import Max
    from django.utils import timezone

    from postbacks.models import Worker

    def newest():
        return Worker.objects.aggregate(at=Max("heartbeat_at"))["at"]

    since = timezone.now()
    first = wait_until(lambda: (at := newest()) and at > since and at, timeout=timeout)
    return bool(first) and bool(wait_until(lambda: newest() > first, timeout=timeout))


# --- end-to-end helpers (a campaign with a rule; a click, then the network's postback) -------

OFFER_URL = "https://offer.example/?s2={cf_click_id}"


def campaign_with_rule(
    url: str,
    *,
    source=None,
    campaign_name: str = "Campaign",
    offer_name: str = "Offer",
    payout: Decimal = Decimal("1"),
    **rule_fields,
):
    """A traffic source (Taboola unless ``source``), an offer paying ``payout`` whose URL
    carries ``{cf_click_id}``, a campaign of both, and a rule to ``url`` scoped to the
    source; returns ``(campaign, rule)``."""
    source = source or factories.traffic_source()
    offer = factories.offer(offer_name, url=OFFER_URL, payout=payout)
    campaign = factories.campaign(source, offer, name=campaign_name)
    return campaign, factories.rule(url, sources=[source], **rule_fields)


def setup_campaign(receiver, path: str = factories.TABOOLA_PATH, **rule_fields):
    """:func:`campaign_with_rule` with the rule sending to ``receiver`` (Taboola's path)."""
    return campaign_with_rule(receiver.url + path, **rule_fields)


def click_id_from(response) -> str:
    """Our click ID, from the offer URL a click redirected to (``s2=``)."""
    return parse_qs(urlsplit(response.headers["Location"]).query)["s2"][0]


def click(client, campaign, external_id: str = "abc", *, param: str = "external_id", **request):
    """A visitor through the campaign link with the source's click ID as ``param``; extra
    query parameters in ``query``, request headers and environ (``HTTP_USER_AGENT``,
    ``REMOTE_ADDR``) as keywords. Returns our click ID."""
    query = {param: external_id, **request.pop("query", {})}
    answer = client.get(f"/c/{campaign.key}", query, **request)
    assert answer.status_code == 302, answer.content
    return click_id_from(answer)


def convert(client, campaign, external_id: str = "abc", *, click_request=None, **postback):
    """A click (:func:`click` with ``click_request``), then the network's S2S postback for
    it (``/cv`` with ``postback``: txid, payout, status...); returns ``/cv``'s 200 answer."""
    click_id = click(client, campaign, external_id, **(click_request or {}))
    answer = client.get("/cv", {"click_id": click_id, **postback})
    assert answer.status_code == 200, answer.content
    answer.click_id = click_id
    return answer
