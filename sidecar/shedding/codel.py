"""CoDel overload detection for a request queue.

Pure (time is passed in). From Nichols & Jacobson, "Controlling Queue Delay"
(ACM Queue, 2012): the signal is not queue length but *sojourn time*, and a queue
is in trouble only when even its *minimum* sojourn over an `interval` stays above
`target`, i.e. the queue never drained in that interval (a standing queue, not
a burst). Defaults: target 5 ms, interval 100 ms, as in the paper.

What we do on that signal follows Facebook ("Fail at Scale", Ben Maurer, ACM
Queue 2015, and folly's `Codel`) rather than the paper's packet control law,
because RPC callers do not back off when one request is dropped the way TCP does:

- not overloaded: a request may wait in the queue up to `interval`;
- overloaded: a request may wait only up to 2 x `target` (folly's "slough
  timeout"); older ones are dropped, and the queue serves newest first (adaptive
  LIFO, see `queue.py`).

Why 2 x target and not target: a standing queue must be able to keep showing
delays above target, or the first interval of dropping would hide the overload
it is treating and the queue would flap between the two regimes.

The sample is the age of the *oldest* waiting request at each dequeue: in FIFO
that is the served request's sojourn, exactly as in the paper; in LIFO it still
measures the standing queue, which the (fresh) served request would not.
"""

from __future__ import annotations

import math


class CoDel:
    __slots__ = ("_interval_end", "_min_sojourn", "interval_s", "overloaded", "target_s")

    def __init__(self, target_s: float = 0.005, interval_s: float = 0.1) -> None:
        self.target_s = target_s
        self.interval_s = interval_s
        self.overloaded = False
        self._interval_end: float | None = None
        self._min_sojourn = math.inf  # over the current interval; inf: no sample yet

    def tick(self, now: float, queue_empty: bool) -> None:
        """Close the interval if it has ended: decide overload from its minimum sojourn.

        An interval with no sample at all is overloaded only if the queue is still
        not empty (nothing left it the whole time); an idle empty queue is fine.
        """
        if self._interval_end is None:
            self._interval_end = now + self.interval_s
            return
        if now < self._interval_end:
            return
        if self._min_sojourn == math.inf:
            self.overloaded = not queue_empty
        else:
            self.overloaded = self._min_sojourn > self.target_s
        self._min_sojourn = math.inf
        self._interval_end = now + self.interval_s

    def sample(self, sojourn_s: float) -> None:
        """At a dequeue, the oldest waiting request's age (0 when one skipped the queue)."""
        if sojourn_s < self._min_sojourn:
            self._min_sojourn = sojourn_s

    @property
    def interval_end(self) -> float | None:
        return self._interval_end

    @property
    def max_sojourn_s(self) -> float:
        """How long a request may wait in the queue right now."""
        return 2.0 * self.target_s if self.overloaded else self.interval_s
