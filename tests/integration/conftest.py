"""Fixtures shared by the integration tests."""

import pytest

from tests.integration.brokers import RedisServer


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of the test's own on a spare port, so the test can restart it."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
