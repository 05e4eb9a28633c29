"""Retry budget, full-jitter backoff and pushback parsing."""

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import Retries
from sidecar.retry import RetryBudget, RetryPolicy, full_jitter_s, parse_pushback


def test_budget_caps_amplification_when_every_attempt_fails() -> None:
    """All failing: attempts <= (1 + budget) x requests + min_retries_per_s x time."""
    cfg = Retries(max_attempts=3, budget_percent=20, min_retries_per_s=10, budget_window_s=10)
    policy = RetryPolicy("up", cfg, random.Random(1))
    rate, seconds = 200, 60
    requests = attempts = 0
    for i in range(rate * seconds):
        now = i / rate
        policy.on_call(now)
        requests += 1
        tries = 1
        while policy.decide(now, status="UNAVAILABLE", attempts=tries, deadline=now + 10).retry:
            tries += 1
        attempts += tries
    assert attempts <= 1.2 * requests + 10 * seconds
    # ...and the budget did allow retries: it is a cap, not a ban.
    assert attempts > requests * 1.1


@given(
    events=st.lists(
        st.tuples(st.floats(min_value=0, max_value=50, allow_nan=False), st.booleans()),
        max_size=300,
    )
)
def test_budget_invariant_holds_for_any_arrivals(events: list[tuple[float, bool]]) -> None:
    """Every granted retry fits: retries in its window <= ratio x requests + minimum x window."""
    budget = RetryBudget(budget_percent=25, min_retries_per_s=0.5, window_s=4, buckets=4)
    requests: list[float] = []
    retries: list[float] = []
    for now, is_retry in sorted(events):
        if not is_retry:
            budget.record_request(now)
            requests.append(now)
        elif budget.try_withdraw(now):
            retries.append(now)
            # Reference model: the window is the 4 one-second buckets ending at now's.
            lo = math.floor(now) - 3
            in_window = sum(1 for t in retries if math.floor(t) >= lo)
            reqs = sum(1 for t in requests if math.floor(t) >= lo)
            assert in_window <= 0.25 * reqs + 0.5 * 4 + 1e-9


def test_budget_refills_after_the_window() -> None:
    """Retries spent in one window are available again once it slides past."""
    budget = RetryBudget(budget_percent=0, min_retries_per_s=1, window_s=2, buckets=2)
    assert budget.try_withdraw(0.0) and budget.try_withdraw(0.1)
    assert not budget.try_withdraw(0.2)
    assert budget.try_withdraw(3.0)


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=0, max_value=2**32))
def test_full_jitter_bounds(retry: int, seed: int) -> None:
    """Backoff lies in [0, min(cap, base x 2^(n-1))]."""
    d = full_jitter_s(retry, 25.0, 250.0, random.Random(seed))
    assert 0.0 <= d <= min(0.25, 0.025 * 2.0 ** min(retry - 1, 62))


def test_full_jitter_spreads_over_the_interval() -> None:
    """Full jitter uses the whole interval (mean near half the ceiling)."""
    rng = random.Random(7)
    draws = [full_jitter_s(3, 25.0, 250.0, rng) for _ in range(2000)]
    assert 0.04 < sum(draws) / len(draws) < 0.06  # ceiling 100 ms
    assert min(draws) < 0.005 and max(draws) > 0.095


@pytest.mark.parametrize(
    ("value", "stop", "delay"),
    [
        (None, False, None),
        ("0", False, 0.0),
        ("150", False, 0.15),
        (b"20", False, 0.02),
        (" 7 ", False, 0.007),
        ("-1", True, None),
        ("abc", True, None),
        ("1.5", True, None),
        ("", True, None),
        (b"\xff", True, None),
        ("\u0661", True, None),  # a non-ASCII digit is garbage too
    ],
)
def test_parse_pushback(value: str | bytes | None, stop: bool, delay: float | None) -> None:
    """Integers are delays; negative or garbage means do not retry (gRPC A6)."""
    p = parse_pushback(value)
    assert p.stop is stop and p.delay_s == delay
