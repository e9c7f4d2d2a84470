"""Run the local receiver that plays the traffic source (and the demo offer page)."""

import contextlib
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from postbacks.receiver import Received, Receiver


class Command(BaseCommand):
    help = "Serve a local postback receiver on 127.0.0.1 that prints every postback it gets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8001)

    def handle(self, *args: Any, port: int, **options: Any) -> None:
        def show(item: Received) -> None:
            self.stdout.write(f"[receiver] postback received: {item.method} {item.path}")
            self.stdout.flush()

        receiver = Receiver(port, tracker_url=settings.TRACKER_BASE_URL, on_request=show)
        self.stdout.write(f"[receiver] listening on {receiver.url}")
        with contextlib.suppress(KeyboardInterrupt):
            receiver.serve_forever()
