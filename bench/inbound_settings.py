"""Settings of the inbound benchmark: the project's, plus the bench-only comparison views.

The project never ships those views: only this module routes to ``bench.inbound_urls``.
"""

from tracker.settings import *  # noqa: F403

ROOT_URLCONF = "bench.inbound_urls"
