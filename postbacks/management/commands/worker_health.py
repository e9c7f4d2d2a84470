"""``manage.py worker_health``: a liveness check for Celery workers (systemd, Kubernetes).

It sends a remote-control ping through the broker and waits for the answers. A worker that
lost its broker connection and stopped consuming (celery 5.7.0 after a Redis restart, see
the README) no longer answers, so the check fails and the supervisor restarts it.

It also opens a connection of its own to the database (``SELECT 1``, within the same
timeout): a worker cannot claim or record a postback without it.

Exit status: 0 when the database answers and every ``--worker`` answered (or, without
``--worker``, at least one worker did); 1 otherwise, including when the broker or the
database cannot be reached.
"""

from __future__ import annotations

import argparse

from celery.utils.nodenames import default_nodename, host_format
from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import OperationalError

from tracker import health
from tracker.celery import app


def node_names(names: list[str]) -> list[str]:
    """Full node names as ``celery worker -n`` builds them: ``w1@%h`` -> ``w1@<this host>``.

    A name without ``@`` is a host name, as for ``-n``: ``web-1`` -> ``celery@web-1``.
    """
    return [host_format(default_nodename(name)) for name in names]


def ping(names: list[str], timeout: float) -> set[str]:
    """Node names that answered a ping within ``timeout`` seconds (all workers if no names).

    Raises ``OperationalError`` when the broker cannot be reached within ``timeout``.
    """
    with app.connection_for_write() as connection:
        # kombu takes seconds as a float; its stubs say int.
        connection.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]
        replies = app.control.ping(
            destination=names or None, timeout=timeout, connection=connection
        )
    return {
        node
        for reply in replies or ()  # None only when no reply is asked for
        for node, answer in reply.items()
        if isinstance(answer, dict) and answer.get("ok") == "pong"
    }


class Command(BaseCommand):
    help = (
        "Check the database and ping Celery workers through the broker; exit 0 when all "
        "answer, 1 otherwise (liveness check for systemd or Kubernetes)."
    )
    requires_system_checks = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--worker",
            action="append",
            default=[],
            metavar="NAME",
            help="Node name to ping, as given to `celery worker -n` (e.g. w1@%%h); "
            "repeatable. Default: any worker.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=5.0,
            help="Seconds to wait for the broker and for the answers (default: %(default)s).",
        )

    def handle(self, *args: object, worker: list[str], timeout: float, **options: object) -> None:
        names = node_names(worker)
        database = health.database_checks(timeout=timeout)[0]
        if not database.ok:
            raise CommandError(f"UNHEALTHY: database unreachable ({database.detail})")
        try:
            answered = ping(names, timeout)
        except (OperationalError, OSError) as exc:
            raise CommandError(f"UNHEALTHY: broker unreachable ({exc})") from exc
        missing = [name for name in names if name not in answered]
        if missing or not answered:
            waited_for = ", ".join(missing) if missing else "any worker"
            raise CommandError(f"UNHEALTHY: no answer within {timeout:g} s from {waited_for}")
        self.stdout.write(f"OK: {len(answered)} worker(s) answered: {', '.join(sorted(answered))}")
