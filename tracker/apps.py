from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class TrackerConfig(AppConfig):
    name = "tracker"
    verbose_name = "Tracking"

    def ready(self) -> None:
        from tracker import ingest, tasks, uploads
        from tracker.models import ConversionType

        uploads.use_process_task(tasks.upload_process_task)

        # This process sees a conversion type change at once; others within 5 s.
        for signal in (post_save, post_delete):
            signal.connect(
                ingest.types_cache_clear, sender=ConversionType, dispatch_uid=f"types-{signal}"
            )
