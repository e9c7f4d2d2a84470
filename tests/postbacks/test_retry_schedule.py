from unittest import mock

import pytest
from django.test import override_settings

from postbacks.services import retry_delay


def test_schedule_doubles_from_the_base_without_jitter():
    with mock.patch("postbacks.services.random.uniform", return_value=1.0):
        assert [retry_delay(n, 60) for n in range(1, 10)] == [
            60, 120, 240, 480, 960, 1920, 3840, 7680, 15360,
        ]  # fmt: skip


@pytest.mark.parametrize("attempt", range(1, 8))
def test_jitter_stays_within_twenty_percent(attempt):
    expected = 30 * 2 ** (attempt - 1)
    delays = [retry_delay(attempt, 30) for _ in range(200)]
    assert all(0.8 * expected <= d <= 1.2 * expected for d in delays)
    assert len(set(delays)) > 1


@override_settings(POSTBACKS_BACKOFF_MAX_SECONDS=600)
def test_never_longer_than_the_cap():
    assert max(retry_delay(n, 60, retry_after=10_000) for n in range(1, 30)) == 600


def test_retry_after_is_a_floor():
    with mock.patch("postbacks.services.random.uniform", return_value=1.0):
        assert retry_delay(1, 5, retry_after=120) == 120
        assert retry_delay(3, 60, retry_after=10) == 240
