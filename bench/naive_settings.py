"""Settings of the naive design: the project's, with Django's default connection handling.

No connection pool and ``CONN_MAX_AGE = 0``: each task opens and closes its own database
connection, as in a Django project that adds a Celery task without tuning anything.
"""

from tracker.settings import *  # noqa: F403
from tracker.settings import DATABASES

DATABASES = {"default": {**DATABASES["default"], "OPTIONS": {}, "CONN_MAX_AGE": 0}}
