"""Celery tasks: thin wrappers that call the dispatcher and ``postbacks.services``."""

from celery import shared_task

from postbacks import services
from postbacks.dispatcher import Dispatcher


@shared_task(name="postbacks.dispatch", ignore_result=True)
def dispatch_task() -> dict[str, int]:
    """Wake-up: this process's dispatcher sends whatever is due (idempotent, no arguments)."""
    return Dispatcher.for_process().run()


@shared_task(name="postbacks.sweep", ignore_result=True)
def sweep_task() -> dict[str, int]:
    """Take back deliveries of lost workers; wake a dispatcher if any is due (Celery beat)."""
    return services.deliveries_sweep()
