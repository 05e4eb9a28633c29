"""The retry decision table, per-try timeouts and the replay buffer."""

import random

import pytest

from sidecar.config import Retries
from sidecar.retry import RetryPolicy, attempt_timeout_s, call_deadline, decide

BASE = {
    "status": "UNAVAILABLE",
    "peer_error": None,
    "pushback": None,
    "response_started": False,
    "replayable": True,
    "attempts": 1,
    "max_attempts": 3,
    "retry_on": {"UNAVAILABLE"},
    "remaining_s": 1.0,
    "backoff_s": 0.01,
}


@pytest.mark.parametrize(
    ("change", "retry", "reason"),
    [
        ({}, True, "unavailable"),
        ({"status": "OK"}, False, "ok"),
        ({"response_started": True}, False, "response_started"),
        ({"status": "NOT_FOUND"}, False, "not_retryable"),
        ({"status": "INTERNAL"}, False, "not_retryable"),
        ({"status": "RESOURCE_EXHAUSTED", "peer_error": "overloaded"}, True, "overloaded"),
        ({"status": "UNAVAILABLE", "peer_error": "connect_failed"}, True, "connect_failed"),
        ({"status": "UNAVAILABLE", "peer_error": "deadline"}, True, "unavailable"),
        (
            {"status": "UNAVAILABLE", "peer_error": "overloaded", "response_started": True},
            False,
            "response_started",
        ),
        ({"replayable": False}, False, "not_buffered"),
        ({"peer_error": "overloaded", "replayable": False}, False, "not_buffered"),
        ({"pushback": "-1"}, False, "pushback"),
        ({"pushback": "soon"}, False, "pushback"),
        ({"attempts": 3}, False, "max_attempts"),
        ({"peer_error": "overloaded", "attempts": 3}, False, "max_attempts"),
        ({"remaining_s": 0.005}, False, "deadline"),
        ({"remaining_s": 0.0}, False, "deadline"),
        ({"pushback": "2000"}, False, "deadline"),
        ({"budget_ok": False}, False, "budget_exhausted"),
    ],
)
def test_decision_table(change: dict[str, object], retry: bool, reason: str) -> None:
    """Each row of the table gives its verdict and reason."""
    d = decide(**{**BASE, **change})  # type: ignore[arg-type]
    assert (d.retry, d.reason) == (retry, reason)


def test_pushback_replaces_backoff() -> None:
    """A valid pushback is the delay, whatever the backoff says."""
    d = decide(**{**BASE, "pushback": "120", "backoff_s": 0.001})  # type: ignore[arg-type]
    assert d.retry and d.delay_s == pytest.approx(0.12)


def test_policy_never_retries_past_deadline() -> None:
    """Every delay granted ends before the deadline, whatever the remaining time."""
    cfg = Retries(max_attempts=10, backoff_base_ms=50, backoff_max_ms=1000)
    policy = RetryPolicy("up", cfg, random.Random(3))
    for i in range(2000):
        now = float(i)
        policy.on_call(now)
        remaining = (i % 200) / 1000.0
        d = policy.decide(now, status="UNAVAILABLE", attempts=1 + i % 5, deadline=now + remaining)
        if d.retry:
            assert d.delay_s < remaining


def test_policy_budget_exhaustion_is_a_reason() -> None:
    """With no budget at all, a safe retry is refused as budget_exhausted."""
    cfg = Retries(budget_percent=0, min_retries_per_s=0)
    policy = RetryPolicy("up", cfg, random.Random(0))
    policy.on_call(0.0)
    d = policy.decide(0.0, status="UNAVAILABLE", attempts=1, deadline=5.0)
    assert (d.retry, d.reason) == (False, "budget_exhausted")


def test_call_deadline_and_per_try_timeout() -> None:
    """The caller's deadline wins; the upstream default applies without one; per-try caps."""
    assert call_deadline(100.0, 0.5, 1000) == 100.5
    assert call_deadline(100.0, None, 1000) == 101.0
    assert call_deadline(100.0, -3, 1000) == 100.0
    assert attempt_timeout_s(100.0, 101.0, None) == 1.0
    assert attempt_timeout_s(100.0, 101.0, 200) == 0.2
    assert attempt_timeout_s(100.9, 101.0, 200) == pytest.approx(0.1)
    assert attempt_timeout_s(101.5, 101.0, 200) < 0
