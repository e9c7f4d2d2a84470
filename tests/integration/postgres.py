"""A PostgreSQL cluster of a test's own, so the test can stop and start its database.

The shared server on 5432 is never touched. ``initdb`` refuses to run as root: when the tests
run as root, the cluster's commands run as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.integration.brokers import free_port


def _binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb is not installed")
    return Path(initdb).parent


class PostgresServer:
    """``initdb`` into a temporary directory and ``pg_ctl`` on a spare port on 127.0.0.1
    (trust authentication, user ``postgres``; fsync off: a test cluster)."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.root = Path(tempfile.mkdtemp(prefix="pg-own-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.starts = 0
        os.chmod(self.root, 0o777)  # the postgres user writes its data and log here
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> PostgresServer:
        """Start the cluster and wait until it accepts connections."""
        self.starts += 1
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=60"
        )
        log = self.root / f"postgres-{self.starts}.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        """Stop it as a failover or a restart does: every connection is cut (fast mode)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):  # not running
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
