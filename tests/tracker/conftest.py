import pytest

from campaigns.services import cache_clear


@pytest.fixture(autouse=True)
def _fresh_campaign_cache():
    """Campaigns cached by an earlier test may have been rolled back with its transaction."""
    cache_clear()
    yield
    cache_clear()
