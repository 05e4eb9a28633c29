"""A sliding-window event counter over a ring of time buckets.

Pure (time is passed in). Retry budgets and adaptive throttling both ask "how many
requests / retries / accepts in the last W seconds?"; a ring of `buckets` buckets
answers that in O(1) memory with a granularity of W / buckets, which is all the
precision those policies need (Finagle's RetryBudget uses the same idea).
"""

from __future__ import annotations

import math


class SlidingCounter:
    """Counts events in the last `window_s` seconds, at `window_s / buckets` resolution."""

    __slots__ = ("_counts", "_ends", "_slot", "_total", "_width", "buckets", "window_s")

    def __init__(self, window_s: float, buckets: int = 10) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("window_s must be > 0 and buckets >= 1")
        self.window_s = window_s
        self.buckets = buckets
        self._width = window_s / buckets
        self._counts = [0.0] * buckets
        self._slot: int | None = None  # absolute index of the newest bucket
        self._ends = -math.inf  # when the newest bucket ends: until then nothing moves
        self._total = 0.0

    def _advance(self, now: float) -> int:
        slot = self._slot
        if now < self._ends and slot is not None:
            return slot  # still in the newest bucket (or a clock gone backwards: "now")
        new = math.floor(now / self._width)
        if slot is None:
            slot = new
        elif new > slot:
            # Clear every bucket that fell out of the window (at most all of them).
            for s in range(slot + 1, min(new, slot + self.buckets) + 1):
                i = s % self.buckets
                self._total -= self._counts[i]
                self._counts[i] = 0.0
            slot = new
        # A clock that goes backwards (it should not: callers pass a monotonic clock)
        # is treated as "now" so counts are never lost.
        self._slot = slot
        self._ends = (slot + 1) * self._width
        return slot

    def add(self, now: float, n: float = 1.0) -> None:
        """Record `n` events at time `now`."""
        slot = self._advance(now)
        self._counts[slot % self.buckets] += n
        self._total += n

    def total(self, now: float) -> float:
        """Events within the window ending at `now`."""
        self._advance(now)
        total = self._total
        return total if total > 0.0 else 0.0  # float drift from repeated add/subtract
