"""The one-command demo (``make run``) under a burst: embedded broker and supervision.

Run as the demo runs: SQLite in a temporary folder, no ``REDIS_URL`` nor
``CELERY_BROKER_URL`` (the embedded file-system broker), the Procfile's processes under
honcho. A worker that dies comes back by itself (``bin/respawn``) while web and receiver go
on; the embedded broker never hands out a half-written message, which made kombu's own
file-system transport end the worker with a ``JSONDecodeError`` under a 5,000-row upload.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.error import HTTPError

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_until
from tests.integration.brokers import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONVERSIONS = 2000
CRM_DELAY_SECONDS = 3  # the demo's is 120 s: a countdown wake-up all the same (<= 60 s)


def demo_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of ``make run`` (its DEMO_ENV), with everything under ``var_dir``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "DEBUG")
    }
    env.update(
        VAR_DIR=str(var_dir),
        DATABASE_URL=f"sqlite:///{var_dir / 'db.sqlite3'}",
        SECRET_KEY="demo-test-secret-key",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        POSTBACKS_ALLOW_PRIVATE_NETWORKS="true",
        TRACKER_PROXY_COUNT="1",
        PATH=f"{BIN}:{env.get('PATH', '')}",
        **extra,
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def processes(pgid: int) -> list[tuple[int, int, str]]:
    """``(pid, parent pid, command line)`` of the live processes of group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid, group = fields[0], int(fields[1]), int(fields[2])
        if group == pgid and state != "Z":
            found.append((int(entry.name), ppid, cmdline))
    return found


class Demo:
    """``honcho start`` on the Procfile in ``var_dir``, its output in ``var_dir/honcho.log``."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.web_port, self.receiver_port = free_port(), free_port()
        self.env = demo_env(
            var_dir,
            WEB_PORT=str(self.web_port),
            RECEIVER_PORT=str(self.receiver_port),
            WEB_CONCURRENCY="2",
            TRACKER_BASE_URL=f"http://127.0.0.1:{self.web_port}",
            # As make run: every web and worker process counts into one directory.
            METRICS_OPEN="true",
            PROMETHEUS_MULTIPROC_DIR=str(var_dir / "prometheus"),
        )
        self.log = var_dir / "honcho.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def setup(self) -> None:
        """migrate and demo_setup, as ``make demo`` does."""
        manage(self.env, "migrate", "--noinput", "-v", "0")
        manage(
            self.env,
            "demo_setup",
            "--demo",
            "--receiver-url",
            f"http://127.0.0.1:{self.receiver_port}",
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "honcho"), "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert wait_until(lambda: self.worker_pid() and self.get("/cv")[0] == 400, 60), (
            self.output()
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def line_pid(self, name: str) -> int:
        """Process group of a Procfile line (honcho starts each in its own session)."""
        for line in self.output().splitlines():
            if f"{name}.1 started (pid=" in line:
                return int(line.rsplit("pid=", 1)[1].rstrip(")"))
        return 0

    def worker_pid(self) -> int:
        """The Celery worker's main process once it is ready (0 before)."""
        group = self.line_pid("worker")
        if not group or self.output().count(" ready.") < self.worker_starts():
            return 0
        # Python processes only: the line's shell and bin/respawn name celery too.
        found = [(pid, ppid) for pid, ppid, cmd in processes(group) if "python" in cmd.split()[0]]
        celery = {pid for pid, _ in found}
        mains = [pid for pid, ppid in found if ppid not in celery]
        return mains[0] if len(mains) == 1 else 0

    def worker_starts(self) -> int:
        return 1 + self.output().count("respawn: celery exited")

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
        except OSError:
            return 0, {}, b""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def query(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(self.var_dir / "db.sqlite3", timeout=30) as db:
            return db.execute(sql, params).fetchall()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def demo(tmp_path):
    demo = Demo(tmp_path)
    demo.setup()
    yield demo
    demo.stop()
    # Nothing of the demo outlives Ctrl-C: no process is left in any line's group.
    for name in ("web", "worker", "beat", "receiver"):
        group = demo.line_pid(name)
        assert wait_until(lambda g=group: not processes(g), 10), f"{name}: {processes(group)}"


def stress(
    env: dict[str, str],
    publishers: int = 2,
    consumers: int = 2,
    seconds: float = 4,
    consume: str = "consume",
):
    """Run publishers and consumers (``consume="drain"``: until the queue is empty, within
    ``seconds``) at once; their totals."""
    command = [sys.executable, "-m", "tests.integration.broker_stress"]
    procs = [
        subprocess.Popen([*command, role, str(seconds)], cwd=ROOT, env=env, stdout=subprocess.PIPE)
        for role in ["publish"] * publishers + [consume] * consumers
    ]
    totals: dict[str, int] = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=60 + seconds)
        assert proc.returncode == 0
        for key, value in json.loads(out).items():
            totals[key] = totals.get(key, 0) + value
    return totals


def test_embedded_broker_hands_out_whole_messages_only(tmp_path):
    """Publishers and consumers hammer the embedded broker at once: every message read is
    whole (kombu's stock transport hands out files still being written: about 1 in 40)."""
    totals = stress(demo_env(tmp_path), seconds=4)
    assert totals["unreadable"] == 0, totals
    assert totals["received"] > 500, totals  # the race had its chances
    # The rest is still queued, whole.
    left = stress(demo_env(tmp_path), publishers=0, consumers=1, seconds=60, consume="drain")
    assert left == {"received": totals["published"] - totals["received"], "unreadable": 0}


def test_embedded_broker_routes_broadcasts_and_per_worker_queues(tmp_path):
    """What remote control and per-worker wake-ups need: a broadcast reaches every listening
    process, a message to one node's own queue (worker_direct) reaches that node only."""
    env = demo_env(tmp_path)
    command = [sys.executable, "-m", "tests.integration.broker_stress"]
    listeners = {
        node: subprocess.Popen(
            [*command, "listen", node], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for node in ("w1@demo", "w2@demo")
    }
    for listener in listeners.values():
        assert listener.stdout.readline().strip() == "listening"
    subprocess.run([*command, "announce", ",".join(listeners)], cwd=ROOT, env=env, check=True)
    for node, listener in listeners.items():
        out, _ = listener.communicate(timeout=30)
        assert json.loads(out) == {"received": sorted(["all", node])}


def make_upload(demo: Demo, rows: int) -> Path:
    """``rows`` clicks on the demo campaign and a CSV file converting each of them."""
    path = demo.var_dir / "conversions.csv"
    code = (
        "import csv, sys\n"
        "from campaigns.models import Campaign\n"
        "from tracker.models import Click\n"
        "c = Campaign.objects.get(name='Taboola demo campaign')\n"
        f"clicks = Click.objects.bulk_create(Click(campaign=c, traffic_source=c.traffic_source,"
        f" external_id=f'tbl-{{i}}') for i in range({rows}))\n"
        f"w = csv.writer(open({str(path)!r}, 'w', newline=''))\n"
        "w.writerow(['click_id', 'payout', 'transaction_id'])\n"
        "w.writerows([k.pk, '1.50', f'T-{i}'] for i, k in enumerate(clicks))\n"
    )
    manage(demo.env, "shell", "-c", code)
    return path


def test_demo_survives_a_burst_and_a_killed_worker(demo):
    """A 2,000-row upload with the delayed CRM rule while the worker is SIGKILLed: the
    worker comes back, web and receiver keep serving, every planned delivery is delivered."""
    demo.query(
        "UPDATE postbacks_postbackrule SET delay_seconds = ? WHERE delay_seconds > 0",
        CRM_DELAY_SECONDS,
    )
    upload = make_upload(demo, CONVERSIONS)
    demo.start()
    first_worker = demo.worker_pid()

    uploading = subprocess.Popen(
        [sys.executable, "manage.py", "conversions_upload", str(upload)],
        cwd=ROOT,
        env=demo.env,
        stdout=(demo.var_dir / "upload.log").open("w"),
        stderr=subprocess.STDOUT,
    )

    def delivered() -> int:
        return demo.query("SELECT count(*) FROM postbacks_delivery WHERE status = 'delivered'")[0][
            0
        ]

    assert wait_until(lambda: delivered() >= 200, 60), demo.output()
    os.kill(first_worker, signal.SIGKILL)

    # Web keeps serving clicks and conversions while the worker is down.
    status, headers, _ = demo.get("/c/" + campaign_key(demo) + "?external_id=tbl-live")
    assert status == 302, demo.output()
    click_id = headers["Location"].rsplit("s2=", 1)[1]
    status, _, body = demo.get(f"/cv?click_id={click_id}&payout=2.35&txid=T-live")
    assert status == 200, body

    restarted = wait_until(
        lambda: demo.worker_starts() == 2 and demo.worker_pid() not in (0, first_worker), 60
    )
    assert restarted, demo.output()
    assert uploading.wait(120) == 0, (demo.var_dir / "upload.log").read_text()[-2000:]

    planned = 2 * (CONVERSIONS + 1)  # the Taboola postback and the CRM lead per conversion
    assert demo.query("SELECT count(*) FROM postbacks_delivery")[0][0] == planned
    assert wait_until(lambda: delivered() == planned, 90), demo.query(
        "SELECT status, count(*) FROM postbacks_delivery GROUP BY status"
    )
    assert_metrics_add_up_every_process(demo, planned)
    output = demo.output()
    assert "JSONDecodeError" not in output
    assert output.count("respawn: celery exited") == 1, output[-5000:]  # the SIGKILL only
    for name in ("web", "beat", "receiver"):
        assert f"{name}.1 stopped" not in output


def assert_metrics_add_up_every_process(demo: Demo, planned: int) -> None:
    """/metrics of the demo's gunicorn sums the counters of its web processes (the live
    conversion) and of the worker's, the killed one's included (the upload's conversions,
    the deliveries); /health and /ready answer."""
    assert demo.get("/health")[0] == 200
    status, _, body = demo.get("/ready")
    assert status == 200, body
    status, _, body = demo.get("/metrics")
    assert status == 200, body
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = samples.get(key, 0) + sample.value

    def total(name: str, **labels: str) -> float:
        return sum(
            value
            for (sample, items), value in samples.items()
            if sample == name and set(labels.items()) <= set(items)
        )

    assert total("tracker_inbound_requests_total", endpoint="s2s", outcome="accepted") == 1
    assert total("tracker_inbound_requests_total", endpoint="upload") == CONVERSIONS
    assert total("tracker_clicks_total") >= 1
    # Counted once recorded: a result the killed worker recorded but had not counted yet is
    # the one way to miss one (at most a batch).
    delivered = total("postbacks_deliveries_total", outcome="delivered")
    assert planned - 100 <= delivered <= planned, delivered
    assert total("postbacks_due_backlog") == 0
    assert total("postbacks_workers_live") >= 1


def campaign_key(demo: Demo) -> str:
    return demo.query("SELECT key FROM campaigns_campaign WHERE name = 'Taboola demo campaign'")[0][
        0
    ]


def test_respawn_restarts_a_command_and_gives_up_on_one_that_cannot_start(tmp_path):
    """bin/respawn runs a command again after each exit; after 5 exits in a row within 10 s
    of their start it stops with status 1 (honcho then ends the demo, error on screen)."""
    runs = tmp_path / "runs"
    done = subprocess.run(
        [str(ROOT / "bin" / "respawn"), "sh", "-c", f"echo run >> {runs}; exit 3"],
        env={**os.environ, "RESPAWN_PAUSE": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert runs.read_text().count("run") == 5
    assert done.stderr.count("respawn: sh exited with status 3; starting it again") == 4
    assert "giving up" in done.stderr.splitlines()[-1]
