"""A call's Deadline: budget, per-try timeout and what a timer ring means (fake `now`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.h2relay.deadline import DEADLINE, PER_TRY, SLEEP, Deadline


def test_without_a_budget_nothing_expires() -> None:
    """No deadline and no per-try timeout: unbounded, and the timer has nothing to do."""
    d = Deadline(100.0, None)
    assert d.remaining(1e9) is None
    assert not d.passed(1e9)
    assert not d.expired(1e9)
    assert d.next_fire() is None
    assert d.try_remaining(100.0) is None
    assert d.ring(1e9, True) == SLEEP


def test_the_budget_counts_from_the_start() -> None:
    """remaining() runs down from the budget and goes negative once spent."""
    d = Deadline(100.0, 2.0)
    assert d.remaining(100.5) == 1.5
    assert d.remaining(103.0) == -1.0
    assert not d.passed(101.999)
    assert d.passed(102.0)
    assert d.next_fire() == 102.0


def test_a_per_try_timeout_inside_the_deadline_moves_the_timer_earlier() -> None:
    """arm_try says the timer moved; grpc-timeout upstream is the try's time, not the call's."""
    d = Deadline(100.0, 2.0)
    assert d.arm_try(100.0, 0.5)
    assert d.next_fire() == 100.5
    assert d.try_remaining(100.1) == pytest.approx(0.4)
    assert d.remaining(100.1) == pytest.approx(1.9)


def test_a_per_try_timeout_past_the_deadline_is_not_armed() -> None:
    """A try that would outlast the call gets the deadline; a later try after an armed one
    moves the timer back to the deadline."""
    d = Deadline(100.0, 1.0)
    assert not d.arm_try(100.8, 0.5)  # 101.3 > 101: nothing to move
    assert d.try_ends is None
    assert d.arm_try(100.0, 0.5)  # first try: 100.5
    assert d.arm_try(100.7, 0.5)  # second try would end at 101.2: back to the deadline
    assert d.try_ends is None and d.next_fire() == 101.0
    assert not d.arm_try(100.7, None)  # no per-try timeout configured


def test_a_ring_means_deadline_per_try_or_sleep_on() -> None:
    """Judged half a tick early; the deadline wins over the try; a ring not yet due sleeps."""
    d = Deadline(100.0, 2.0)
    d.arm_try(100.0, 0.5)
    assert d.ring(100.49, True) == SLEEP
    assert d.ring(100.4996, True) == PER_TRY
    assert d.ring(101.9996, True) == DEADLINE


def test_a_per_try_timer_left_by_an_ended_attempt_is_forgotten() -> None:
    """The attempt ended before its timer rang: the ring sleeps on to the deadline."""
    d = Deadline(100.0, 2.0)
    d.arm_try(100.0, 0.5)
    assert d.ring(100.5, False) == SLEEP
    assert d.try_ends is None
    assert d.next_fire() == 102.0


def test_expired_counts_an_answer_within_2ms_of_our_timer() -> None:
    """A peer's DEADLINE_EXCEEDED this close to our own timer is our timeout."""
    d = Deadline(100.0, 2.0)
    d.arm_try(100.0, 0.5)
    assert not d.expired(100.4975)
    assert d.expired(100.4985)
    d.end_try()
    assert not d.expired(100.5)  # back to the call's deadline
    assert d.expired(101.999)


@given(
    budget=st.floats(0.001, 100.0),
    tries=st.lists(st.tuples(st.floats(0.0, 120.0), st.floats(0.001, 50.0)), max_size=6),
)
def test_the_timer_never_rings_after_the_deadline(
    budget: float, tries: list[tuple[float, float]]
) -> None:
    """Whatever the tries, next_fire() is at or before the deadline, and a per-try timer
    is only ever armed strictly inside it."""
    d = Deadline(0.0, budget)
    for start, per_try in sorted(tries):
        d.arm_try(start, per_try)
        fire = d.next_fire()
        assert fire is not None and fire <= budget
        assert d.try_ends is None or d.try_ends < budget
