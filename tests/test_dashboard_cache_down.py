"""Admin pages that read the Django cache keep working while its Redis is down.

The cache here is a ``redis-server`` of the test's own (on a free port): it serves the admin
once, so that figures are cached, then it is stopped, as a Redis restart or outage would.
"""

from __future__ import annotations

import logging

import pytest
import redis

from tests import factories
from tests.integration.brokers import RedisServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def cache_redis(tmp_path, settings):
    """The default cache on a redis-server of our own; stopped at the end in any case."""
    server = RedisServer(tmp_path).start()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
        }
    }
    yield server
    server.stop()


def stopped(server: RedisServer) -> None:
    server.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()


def test_admin_index_shows_the_dashboard_while_the_cache_is_down(admin_client, cache_redis, caplog):
    source = factories.traffic_source("MGID")
    factories.delivery("https://ts.example/pb", traffic_source=source, status="failed")
    assert admin_client.get("/admin/").status_code == 200  # figures cached in Redis
    stopped(cache_redis)

    with caplog.at_level(logging.WARNING, logger="tracker.cache"):
        response = admin_client.get("/admin/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Postbacks by traffic source" in page and "MGID" in page
    assert 'id="content-main"' in page  # the app list too
    assert any("cache" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("model", ["click", "impression"])
def test_visit_lists_filter_by_recent_values_while_the_cache_is_down(
    admin_client, cache_redis, caplog, model
):
    campaign = factories.campaign()
    if model == "click":
        factories.click(campaign, country_code="DE", os="Android", browser="Chrome")
    else:
        from tracker.models import Impression

        Impression.objects.create(
            campaign=campaign,
            traffic_source=campaign.traffic_source,
            country_code="DE",
            os="Android",
            browser="Chrome",
        )
    stopped(cache_redis)

    with caplog.at_level(logging.WARNING, logger="tracker.cache"):
        response = admin_client.get(f"/admin/tracker/{model}/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "?country=DE" in page and "?os=Android" in page and "?browser=Chrome" in page
    assert any("cache" in record.getMessage() for record in caplog.records)
