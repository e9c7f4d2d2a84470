"""The Celery application; tasks are found in each app's ``tasks.py``."""

import logging
import os

from celery import Celery
from celery.signals import after_setup_logger, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")

app = Celery("tracker")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
def quiet_task_trace(**kwargs: object) -> None:
    """Keep the worker log about postbacks: no line per task received, run or scheduled."""
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_init.connect
def no_database_pool_in_workers(**kwargs: object) -> None:
    """Workers keep one connection per thread instead of the web's connection pool.

    Only three threads of a worker process query (dispatcher, recorder, heartbeat), and
    Celery's Django fixup closes a prefork child's whole pool before and after every task,
    which would break the heartbeat thread's connection and open a new pool per wake-up.
    Runs in the main worker process before the pool's processes are forked.
    """
    from django.conf import settings

    for database in settings.DATABASES.values():
        database.get("OPTIONS", {}).pop("pool", None)
