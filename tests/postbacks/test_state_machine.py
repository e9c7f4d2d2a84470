"""The delivery state machine: (attempt, result) -> next state, without a database."""

from datetime import UTC, datetime
from unittest import mock

import pytest

from postbacks.services import next_state
from postbacks.transports import Outcome, Result

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def move(result: Result, number: int = 1, max_attempts: int = 3):
    return next_state(
        attempt_number=number,
        max_attempts=max_attempts,
        retry_base_seconds=60,
        result=result,
        now=NOW,
    )


def test_delivered():
    transition = move(Result(Outcome.DELIVERED, status_code=200))
    assert (transition.outcome, transition.status, transition.delivered_at) == (
        "delivered", "delivered", NOW,
    )  # fmt: skip
    assert transition.due_at is None


def test_permanent_failure_is_final():
    transition = move(Result(Outcome.FAILED, status_code=404, error="HTTP 404"))
    assert (transition.outcome, transition.status, transition.error) == (
        "failed", "failed", "HTTP 404",
    )  # fmt: skip


@pytest.mark.parametrize(("number", "wait"), [(1, 60), (2, 120)])
def test_retry_is_rescheduled_with_backoff(number, wait):
    with mock.patch("postbacks.services.random.uniform", return_value=1.0):
        transition = move(Result(Outcome.RETRY, status_code=503, error="HTTP 503"), number)
    assert (transition.outcome, transition.status) == ("retry", "scheduled")
    assert (transition.due_at - NOW).total_seconds() == wait


def test_retry_on_the_last_attempt_gives_up():
    transition = move(Result(Outcome.RETRY, error="Timeout"), number=3, max_attempts=3)
    assert (transition.outcome, transition.status) == ("failed", "failed")
    assert transition.error == "Timeout (gave up after 3 attempts)"
