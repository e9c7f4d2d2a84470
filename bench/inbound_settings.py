"""Settings of the inbound benchmark: the project's, plus the bench-only comparison views.

The project never ships those views: only this module routes to ``bench.inbound_urls``.
``BENCH_WAKE=0`` in the environment turns the dispatcher wake-up publish into a no-op in
the server (see ``bench.inbound_urls``), to measure ``/cv`` without it.
"""

import os

from tracker.settings import *  # noqa: F403

ROOT_URLCONF = "bench.inbound_urls"
BENCH_WAKE = os.environ.get("BENCH_WAKE", "1") != "0"
