"""Concurrency limit algorithms: bounds for any samples, AIMD backs off, gradient adapts."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import InboundAdmission
from sidecar.shedding import AIMDLimit, FixedLimit, GradientLimit, make_limit

samples = st.lists(
    st.tuples(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-5, max_value=10_000),
        st.booleans(),
    ),
    max_size=300,
)


@given(samples, st.integers(1, 50), st.integers(1, 500), st.integers(-10, 1000))
def test_aimd_stays_in_bounds(
    seq: list[tuple[float, int, bool]], lo: int, span: int, initial: int
) -> None:
    """AIMD's limit is an int in [min, max] after every sample."""
    lim = AIMDLimit(initial, lo, lo + span)
    for rtt, inflight, dropped in seq:
        lim.on_sample(rtt, inflight, dropped)
        assert isinstance(lim.limit, int) and lo <= lim.limit <= lo + span


@given(samples, st.integers(1, 50), st.integers(1, 500), st.integers(-10, 1000))
def test_gradient_stays_in_bounds(
    seq: list[tuple[float, int, bool]], lo: int, span: int, initial: int
) -> None:
    """Gradient's limit is an int in [min, max] after every sample, even NaN or inf RTTs."""
    lim = GradientLimit(initial, lo, lo + span)
    for rtt, inflight, dropped in seq:
        lim.on_sample(rtt, inflight, dropped)
        assert isinstance(lim.limit, int) and lo <= lim.limit <= lo + span
        assert math.isfinite(lim._limit)


def test_aimd_backs_off_on_drops_and_grows_when_used() -> None:
    """A drop multiplies by 0.9; used successes add one; idle successes do nothing."""
    lim = AIMDLimit(100, 1, 1000)
    lim.on_sample(0.01, 10, dropped=True)
    assert lim.limit == 90
    lim.on_sample(0.01, 10, dropped=False)  # in flight 10 < 90/2: app-limited
    assert lim.limit == 90
    lim.on_sample(0.01, 45, dropped=False)
    assert lim.limit == 91
    for _ in range(100):
        lim.on_sample(0.01, 1, dropped=True)
    assert lim.limit == 1


def test_gradient_shrinks_when_latency_climbs_and_recovers() -> None:
    """Steady RTT grows the limit; RTT 10x the norm shrinks it; back to normal it grows."""
    lim = GradientLimit(20, 4, 200)
    for _ in range(200):
        lim.on_sample(0.010, lim.limit, False)
    grown = lim.limit
    assert grown > 20
    for _ in range(30):
        lim.on_sample(0.100, lim.limit, False)
    shrunk = lim.limit
    assert shrunk < grown / 2
    for _ in range(300):
        lim.on_sample(0.010, lim.limit, False)
    assert lim.limit > shrunk


def test_make_limit_from_config() -> None:
    """Config picks fixed, aimd or gradient; adaptive starts at max_concurrency when set."""
    assert make_limit(InboundAdmission()) is None
    fixed = make_limit(InboundAdmission(max_concurrency=8))
    assert isinstance(fixed, FixedLimit) and fixed.limit == 8
    aimd = make_limit(InboundAdmission(adaptive="aimd", max_concurrency=30, min_concurrency=2))
    assert isinstance(aimd, AIMDLimit) and aimd.limit == 30 and aimd.min_limit == 2
    grad = make_limit(InboundAdmission(adaptive="gradient", max_concurrency_limit=10))
    assert isinstance(grad, GradientLimit) and grad.limit == 10


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5])
def test_aimd_refuses_a_bad_ratio(bad: float) -> None:
    """A backoff ratio outside (0, 1) would not back off: refused."""
    with pytest.raises(ValueError):
        AIMDLimit(10, 1, 100, backoff_ratio=bad)
