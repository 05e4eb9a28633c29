"""The refresh/stale/grace state machine on a fake clock, with Hypothesis."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.discovery.state import MIN_DELAY_S, NameState, Publish, Timing
from sidecar.endpoint import Endpoint

TIMING = Timing(
    ttl_floor_s=5, ttl_cap_s=60, jitter=0.2, backoff_initial_s=1, backoff_max_s=16, empty_grace_s=30
)
A = (Endpoint("10.0.0.1", 80, "lon3", 10, 5, "a"),)
B = (Endpoint("10.0.0.2", 80, "lon3", 10, 5, "b"),)


def test_refresh_follows_ttl_with_floor_cap_and_jitter_below_it() -> None:
    """Next lookup at TTL clamped to [floor, cap], shortened by at most `jitter`."""
    rng = random.Random(1)
    for ttl, base in ((1, 5), (20, 20), (3600, 60), (None, 5)):
        for _ in range(50):
            state = NameState(TIMING)
            state.on_answer(A, ttl, 100.0, rng)
            assert base * 0.8 <= state.next_at - 100.0 <= base


def test_failure_keeps_the_set_marks_it_stale_and_backs_off() -> None:
    """Failures keep the last good set, stale; retries back off to the cap; recovery clears."""
    rng = random.Random(2)
    state = NameState(TIMING)
    assert state.on_answer(A, 30, 0.0, rng) == Publish(A, stale=False)
    assert state.on_failure("timeout", 10.0, rng) == Publish(A, stale=True)
    delays = []
    now = 10.0
    for _ in range(8):
        assert state.on_failure("timeout", now, rng) is None  # no change to publish
        delays.append(state.next_at - now)
        now = state.next_at
    assert delays[0] < delays[2] < delays[4]
    assert max(delays) <= 16
    assert state.endpoints == A and state.stale
    assert state.on_answer(A, 30, now, rng) == Publish(A, stale=False)
    assert state.last_error is None and state.failures == 0


def test_nxdomain_is_believed_only_after_the_grace_period() -> None:
    """Empty answers keep the last set (stale) until they have held for empty_grace_s."""
    rng = random.Random(3)
    state = NameState(TIMING)
    state.on_answer(A, 5, 0.0, rng)
    assert state.on_empty("nxdomain", 5, 10.0, rng) == Publish(A, stale=True)
    assert state.next_at <= 40.0  # a look at the end of the grace period at the latest
    assert state.on_empty("nxdomain", 5, 25.0, rng) is None
    assert state.on_empty("nxdomain", 5, 40.0, rng) == Publish((), stale=False)
    # a good answer in between restarts the grace period
    state.on_answer(B, 5, 50.0, rng)
    state.on_empty("nodata", 5, 60.0, rng)
    state.on_answer(B, 5, 70.0, rng)
    assert state.on_empty("nodata", 5, 80.0, rng) == Publish(B, stale=True)
    assert state.on_empty("nodata", 5, 100.0, rng) is None


def test_empty_without_a_previous_set_and_explicit_dot_are_believed_at_once() -> None:
    """Nothing to protect, or an explicit target '.': the empty set goes out at once."""
    rng = random.Random(4)
    state = NameState(TIMING)
    assert state.on_empty("nxdomain", None, 0.0, rng) == Publish((), stale=False)
    state.on_answer(A, 5, 1.0, rng)
    assert state.on_empty("target '.'", 5, 2.0, rng, explicit=True) == Publish((), stale=False)


def test_a_failure_before_any_answer_publishes_nothing() -> None:
    """With no good set yet, a failure is only recorded (and retried)."""
    state = NameState(TIMING)
    assert state.on_failure("servfail", 0.0, random.Random(5)) is None
    assert state.last_error == "servfail" and state.next_at > 0


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["good_a", "good_b", "failure", "nxdomain", "nodata", "dot"]),
        st.floats(min_value=0.0, max_value=40.0),
        st.one_of(st.none(), st.integers(min_value=0, max_value=1000)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, seed=st.integers(0, 2**32))
def test_no_sequence_empties_a_good_set_early_or_schedules_badly(
    events: list[tuple[str, float, int | None]], seed: int
) -> None:
    """For any events: an empty set is published only after grace (or '.'), failures
    never change the set, and the next lookup is always ahead and within bounds."""
    rng = random.Random(seed)
    state = NameState(TIMING)
    now = 0.0
    empties_since: float | None = None
    for kind, dt, ttl in events:
        now += dt
        before = state.endpoints
        if kind == "failure":
            pub = state.on_failure("timeout", now, rng)
            assert state.endpoints == before
            assert pub is None or pub.endpoints == before
        elif kind.startswith("good"):
            pub = state.on_answer(A if kind == "good_a" else B, ttl, now, rng)
            empties_since = None
            assert state.endpoints and not state.stale
        else:
            if empties_since is None:
                empties_since = now
            pub = state.on_empty(kind, ttl, now, rng, explicit=kind == "dot")
            if pub is not None and pub.endpoints == () and before:
                assert kind == "dot" or now - empties_since >= TIMING.empty_grace_s
            if kind == "dot":
                empties_since = None
        delay = state.next_at - now
        assert MIN_DELAY_S <= delay <= max(TIMING.ttl_cap_s, TIMING.backoff_max_s)
        assert state.stale == bool(state.stale and state.endpoints)
