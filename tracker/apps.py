from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class TrackerConfig(AppConfig):
    name = "tracker"
    verbose_name = "Tracking"

    def ready(self) -> None:
        from celery.signals import task_postrun, worker_process_shutdown

        from tracker import health, ingest, metrics, tasks, uploads
        from tracker.models import ConversionType

        uploads.use_process_task(tasks.upload_process_task)

        # The periodic tasks' last runs (status page, /ready, metrics); the live gauges of a
        # worker process that ends (prometheus-client's multiprocess mode).
        task_postrun.connect(health.task_run_record, weak=False, dispatch_uid="task-runs")
        worker_process_shutdown.connect(
            metrics.process_shutdown, weak=False, dispatch_uid="metrics-process-shutdown"
        )

        # This process sees a conversion type change at once; others within 5 s.
        for signal in (post_save, post_delete):
            signal.connect(
                ingest.types_cache_clear, sender=ConversionType, dispatch_uid=f"types-{signal}"
            )
