"""Celery tasks: thin wrappers that call ``postbacks.services``."""

from celery import shared_task

from postbacks import services


@shared_task(name="postbacks.deliver", acks_late=True, reject_on_worker_lost=True)
def deliver_task(delivery_id: int) -> str | None:
    """Send one delivery if it is still due and unclaimed (idempotent)."""
    return services.delivery_send(delivery_id)


@shared_task(name="postbacks.sweep")
def sweep_task() -> dict[str, int]:
    """Enqueue due deliveries and reclaim ones whose worker died (run by Celery beat)."""
    return services.deliveries_sweep()
