"""Client-side adaptive throttling and upstream limits."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import UpstreamConfig
from sidecar.outcome import Outcome
from sidecar.retry import AdaptiveThrottle, LimitExceeded, UpstreamLimits, UpstreamPolicy
from sidecar.retry.throttle import reject_probability


@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=1, max_value=10),
)
def test_reject_probability_formula(requests: int, accepts: int, k: float) -> None:
    """p = max(0, (requests - K accepts) / (requests + 1)), always in [0, 1)."""
    p = reject_probability(requests, accepts, k)
    assert p == max(0.0, (requests - k * accepts) / (requests + 1))
    assert 0.0 <= p < 1.0


def test_throttle_counts_requests_and_accepts() -> None:
    """After 100 attempts with 10 accepted, p is (100 - 2*10)/101."""
    t = AdaptiveThrottle(k=2, window_s=60)
    rng = random.Random(0)
    sent = 0
    for i in range(100):
        if t.allow(i * 0.01, rng):
            sent += 1
        if i < 10:
            t.record(i * 0.01, Outcome.SUCCESS)
        else:
            t.record(i * 0.01, Outcome.OVERLOADED)
    assert t.probability(1.0) == pytest.approx(80 / 101)
    assert sent < 100  # some were rejected locally along the way


def test_throttle_healthy_upstream_never_rejects() -> None:
    """While the backend accepts everything, no attempt is rejected locally."""
    t = AdaptiveThrottle()
    rng = random.Random(0)
    for i in range(1000):
        assert t.allow(i * 0.001, rng)
        t.record(i * 0.001, Outcome.SUCCESS)


def test_throttle_bounds_load_on_a_dead_upstream_and_forgets() -> None:
    """With everything rejected, sent attempts fall far below offered; after the window, p=0."""
    t = AdaptiveThrottle(k=2, window_s=10, buckets=10)
    rng = random.Random(42)
    sent = 0
    for i in range(5000):
        if t.allow(i * 0.001, rng):
            sent += 1
            t.record(i * 0.001, Outcome.UNAVAILABLE)
    assert sent < 500
    assert t.probability(100.0) == 0.0


def test_throttle_ignores_attempts_in_flight() -> None:
    """A burst of concurrent attempts, none back yet, is never throttled; their failures are."""
    t = AdaptiveThrottle(k=2, window_s=10)
    rng = random.Random(0)
    assert all(t.allow(0.0, rng) for _ in range(100))
    assert t.probability(0.0) == 0.0
    for _ in range(100):
        t.record(0.01, Outcome.UNAVAILABLE)
    assert t.probability(0.01) == pytest.approx(100 / 101)


def test_throttle_counts_an_attempt_refused_before_it_was_sent() -> None:
    """Allowed attempts refused locally before sending (a full pending queue) leave the
    in-flight count and stay requests that nothing accepted."""
    t = AdaptiveThrottle(k=2, window_s=10)
    rng = random.Random(0)
    assert all(t.allow(0.0, rng) for _ in range(10))
    for _ in range(10):
        t.unsent(0.01)
    assert t.in_flight == 0
    assert t.probability(0.01) == pytest.approx(10 / 11)


def test_a_full_pending_queue_hands_the_attempt_back_to_the_throttle() -> None:
    """The seam: `attempt()` lets an attempt through, `pending()` refuses it (max_pending 0),
    `attempt_unsent()` takes it off the throttle's in-flight count."""
    from sidecar.policy import Refusal
    from sidecar.policy_adapters import UpstreamCalls

    calls = UpstreamCalls("u", UpstreamConfig(endpoints=["127.0.0.1:1"], limits={"max_pending": 0}))
    state = calls.begin(0.0)
    assert not isinstance(state, Refusal)
    assert state.attempt(0.0) is None
    throttle = calls.policy.throttle
    assert throttle is not None and throttle.in_flight == 1
    assert state.pending() is calls._pending_full
    state.attempt_unsent(0.0)
    assert throttle.in_flight == 0


def test_throttle_quiet_below_min_requests() -> None:
    """Fewer requests than min_requests in the window: never a local rejection, even all failing."""
    t = AdaptiveThrottle(k=2, window_s=10, min_requests=20)
    rng = random.Random(0)
    for i in range(20):
        assert t.allow(i * 0.01, rng)
        t.record(i * 0.01, Outcome.UNAVAILABLE)
    assert t.probability(0.2) > 0.9  # 20 requests in the window: the formula applies


def test_application_errors_count_as_accepted() -> None:
    """NOT_FOUND-like results (SUCCESS outcome) and cancels are accepts; overload is not."""
    t = AdaptiveThrottle(k=1)
    rng = random.Random(0)
    for outcome in (Outcome.SUCCESS, Outcome.CANCELLED, Outcome.TIMEOUT, Outcome.UNAVAILABLE):
        t.allow(0.0, rng)
        t.record(0.0, outcome)
    assert t.probability(0.0) == pytest.approx((4 - 2) / 5)


def test_limits_fail_fast_and_release_once() -> None:
    """Past max_requests, acquire raises; releasing a token twice frees one slot."""
    lim = UpstreamLimits("up", max_requests=2, max_pending=1)
    a = lim.try_acquire()
    b = lim.try_acquire()
    assert a is not None and b is not None
    assert lim.try_acquire() is None
    with pytest.raises(LimitExceeded) as err, lim.acquire():
        pass
    assert err.value.status == "RESOURCE_EXHAUSTED"
    assert err.value.trailers == (("x-sidecar-error", "overloaded"),)
    a.release()
    a.release()
    assert lim.active == 1
    b.release()
    assert lim.active == 0


def test_limits_pending_slots() -> None:
    """Only max_pending calls may wait for a connection; the slot frees on leaving."""
    lim = UpstreamLimits("up", max_requests=10, max_pending=1)
    with lim.acquire() as t1, lim.acquire() as t2:
        with t1.pending():
            assert lim.pending == 1
            with pytest.raises(LimitExceeded) as err, t2.pending():
                pass
            assert err.value.which == "max_pending"
        assert lim.pending == 0
        with t2.pending():
            pass
    assert (lim.active, lim.pending) == (0, 0)


def test_limits_release_inside_pending_frees_both_once() -> None:
    """A token released while pending gives back both slots exactly once."""
    lim = UpstreamLimits("up", max_requests=1, max_pending=1)
    with lim.acquire() as tok, tok.pending():
        tok.release()
        assert (lim.active, lim.pending) == (0, 0)
    assert (lim.active, lim.pending) == (0, 0)


@given(st.lists(st.sampled_from(["acq", "rel", "rel2"]), max_size=200))
def test_limits_never_go_negative_or_over(ops: list[str]) -> None:
    """Any sequence of acquires and (double) releases keeps 0 <= active <= max."""
    lim = UpstreamLimits("up", max_requests=3, max_pending=1)
    held = []
    for op in ops:
        if op == "acq":
            t = lim.try_acquire()
            if t is not None:
                held.append(t)
        elif held:
            t = held.pop(0)
            t.release()
            if op == "rel2":
                t.release()
        assert 0 <= lim.active <= 3
        assert lim.active == len(held)


def test_upstream_policy_from_config() -> None:
    """The bundle reads timeout_ms, per_try_timeout_ms, limits, retries and throttling."""
    cfg = UpstreamConfig.model_validate(
        {
            "timeout_ms": 500,
            "per_try_timeout_ms": 100,
            "retries": {"max_attempts": 2},
            "limits": {"max_requests": 7, "max_pending": 3},
        }
    )
    p = UpstreamPolicy("up", cfg, random.Random(0))
    assert p.deadline(10.0, None) == 10.5
    assert p.attempt_timeout(10.0, 10.5) == pytest.approx(0.1)
    assert p.limits.max_requests == 7 and p.retry is not None
    assert p.allow_attempt(0.0)
    assert UpstreamPolicy("x", UpstreamConfig(throttling=None)).throttle is None
    assert UpstreamPolicy("x", UpstreamConfig()).retry is None


def test_call_seam_pending_slots_fail_fast_and_come_back() -> None:
    """The pipeline's seam: past max_pending a waiting attempt is refused as overloaded;
    `connected()` or the call's release gives the slot back, once."""
    from sidecar.policy import Refusal
    from sidecar.policy_adapters import UpstreamCalls

    calls = UpstreamCalls("up", UpstreamConfig(limits={"max_requests": 5, "max_pending": 1}))
    first, second = calls.begin(0.0), calls.begin(0.0)
    assert not isinstance(first, Refusal) and not isinstance(second, Refusal)
    assert first.pending() is None
    refusal = second.pending()
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.reason) == ("RESOURCE_EXHAUSTED", "overloaded")
    assert "max_pending" in refusal.message
    first.connected()
    first.connected()  # idempotent
    assert second.pending() is None  # the slot came back
    second.release(Outcome.CANCELLED, 1.0)  # releasing frees a held pending slot too
    first.release(Outcome.SUCCESS, 1.0)
    limits = calls.policy.limits
    assert (limits.active, limits.pending) == (0, 0)
