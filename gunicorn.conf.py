"""gunicorn's settings file, read from the working directory (``gunicorn tracker.wsgi``).

prometheus-client's multiprocess mode: when a web process ends, its live gauges are dropped
(its counters stay in the totals). See README "Health and metrics".
"""

import os

from prometheus_client import multiprocess


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
