"""The WSGI application (gunicorn, runserver): refuses to start without a secret key."""

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker.settings")
application = get_wsgi_application()

try:
    settings.SECRET_KEY  # noqa: B018 - Django raises on an empty key only when it is read
except ImproperlyConfigured as exc:
    raise ImproperlyConfigured(
        "Set SECRET_KEY to serve the tracker (or DEBUG=true for local development)."
    ) from exc

# Each server process loads the user-agent rules and IP databases (about 0.65 s) as it starts,
# not while its first visitor waits.
from tracker import enrichment  # noqa: E402

enrichment.warm_up()
