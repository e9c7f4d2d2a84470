"""Celery tasks of the tracker: thin wrappers around ``tracker.uploads``.

``tracker.uploads.upload_enqueue`` sends :func:`upload_process_task` (set in ``tracker.apps``).
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import worker_process_init, worker_ready
from django.conf import settings

from tracker import clickbuffer, services, uploads
from tracker.models import ConversionUpload

log = logging.getLogger(__name__)


@worker_process_init.connect
def click_writer_start(**_: object) -> None:
    """Each worker process (prefork child) writes buffered clicks on a thread of its own."""
    clickbuffer.Flusher.start_for_process(services.click_plan)


@worker_ready.connect
def click_writer_start_solo(sender: object = None, **_: object) -> None:
    """With the threads or solo pool, tasks run in the main process: it writes."""
    if not isinstance(getattr(sender, "pool", None), PreforkPool):
        clickbuffer.Flusher.start_for_process(services.click_plan)


# One task processes an upload for at most this long, then sends a new task that goes on
# where it stopped (under CELERY_TASK_SOFT_TIME_LIMIT, whatever the size of the file).
UPLOAD_TASK_SECONDS = 60.0


@shared_task(name="tracker.upload_process", ignore_result=True)
def upload_process_task(upload_id: int) -> None:
    """Process a CSV upload (``uploads.upload_process``); resumes where an earlier run
    stopped, so a redelivered or repeated message imports nothing twice."""
    upload = ConversionUpload.objects.defer("content").filter(pk=upload_id).first()
    if upload is None or upload.state == ConversionUpload.State.DONE:
        return
    upload = uploads.upload_process(upload, max_seconds=UPLOAD_TASK_SECONDS)
    if upload.state == ConversionUpload.State.RUNNING:
        upload_process_task.delay(upload_id)


@shared_task(name="tracker.uploads_resume", ignore_result=True)
def uploads_resume_task() -> int:
    """Periodic (beat, every minute): send the processing task again for each upload whose
    progress stopped for ``TRACKER_UPLOAD_STALLED_SECONDS`` (a lost task, a killed worker,
    a broker down at upload time). Each is taken before it is sent, so a second beat sends
    none twice. Returns how many were sent."""
    stalled = uploads.uploads_stalled_take(settings.TRACKER_UPLOAD_STALLED_SECONDS)
    for upload_id in stalled:
        log.warning("Upload %s made no progress: processing it again.", upload_id)
        upload_process_task.delay(upload_id)
    return len(stalled)
