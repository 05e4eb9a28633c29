"""A call's time: its deadline, and the per-try timeout of the attempt in flight.

Pure (no I/O, no clock: every verb takes `now`). The call's budget is the caller's
`grpc-timeout`, else the route's `timeout_ms`; it bounds the whole call, retries
included (gRPC's A6 retry design, grpc/proposal A6-client-retries.md: the call's
deadline bounds all of its attempts). A route's `per_try_timeout_ms` bounds one attempt, never past the deadline.

The call keeps one slot in the plane's timer wheel (timers.py) at `next_fire()`; when
it rings, `ring(now, attempt_open)` says what the ring means:
1. `DEADLINE`: the call's budget is spent (whatever the attempt is doing).
2. `PER_TRY`: the open attempt's own time is up (the call may retry).
3. `SLEEP`: an early wake-up (a per-try timer left by an attempt that ended since, or
   one not due yet): sleep on to `next_fire()`.
Both are judged 0.5 ms early: the wheel rounds a slot up to the next 1 ms tick, so a
timer never fires early, and a ring that close to the time is that time.
"""

from __future__ import annotations

from typing import Final

SLEEP: Final = 0
DEADLINE: Final = 1
PER_TRY: Final = 2

# the wheel's half tick (timers.py): a ring this close to a time counts as that time
_RING_EARLY_S: Final = 0.0005
# expired(): an answer this close to our own timer is our timeout (see expired)
_EXPIRED_SLACK_S: Final = 0.002


class Deadline:
    """The call's deadline (`ends`) and the open attempt's per-try timeout (`try_ends`),
    both monotonic times, or None when unbounded."""

    __slots__ = ("ends", "try_ends")

    def __init__(self, now: float, budget_s: float | None) -> None:
        self.ends: float | None = None if budget_s is None else now + budget_s
        self.try_ends: float | None = None

    def remaining(self, now: float) -> float | None:
        """Seconds left of the call's budget (negative once spent), None: unbounded."""
        ends = self.ends
        return None if ends is None else ends - now

    def passed(self, now: float) -> bool:
        """The call's budget is spent: no new attempt may start."""
        ends = self.ends
        return ends is not None and now >= ends

    def arm_try(self, now: float, per_try_s: float | None) -> bool:
        """An attempt starts at `now`: give it its per-try timeout when that ends before
        the deadline. True when `next_fire()` moved (the caller re-arms its timer)."""
        if per_try_s is None:
            return False
        ends = now + per_try_s
        if self.ends is None or ends < self.ends:
            self.try_ends = ends
            return True
        if self.try_ends is not None:  # an earlier attempt's timer: back to the deadline
            self.try_ends = None
            return True
        return False

    def end_try(self) -> None:
        """The attempt's per-try timer is spent or no longer applies."""
        self.try_ends = None

    def try_remaining(self, now: float) -> float | None:
        """What this attempt may take (the `grpc-timeout` sent upstream): to its per-try
        timeout, else to the deadline; None: unbounded."""
        ends = self.try_ends if self.try_ends is not None else self.ends
        return None if ends is None else ends - now

    def expired(self, now: float) -> bool:
        """This attempt's time is up, or within 2 ms: a peer answering DEADLINE_EXCEEDED
        this close to our timer gave up on the budget we sent it (`try_remaining`), so
        it is our timeout, not the app's answer."""
        ends = self.try_ends if self.try_ends is not None else self.ends
        return ends is not None and now >= ends - _EXPIRED_SLACK_S

    def next_fire(self) -> float | None:
        """When the call's timer should ring next: the per-try timeout, else the deadline."""
        return self.try_ends if self.try_ends is not None else self.ends

    def ring(self, now: float, attempt_open: bool) -> int:
        """What the call's timer ringing at `now` means: DEADLINE, PER_TRY or SLEEP (see
        the module's docstring). A per-try timer whose attempt has ended is forgotten."""
        ends = self.ends
        if ends is not None and now >= ends - _RING_EARLY_S:
            return DEADLINE
        try_ends = self.try_ends
        if try_ends is not None and attempt_open:
            return PER_TRY if now >= try_ends - _RING_EARLY_S else SLEEP
        self.try_ends = None
        return SLEEP

    def __repr__(self) -> str:
        return f"Deadline(ends={self.ends}, try_ends={self.try_ends})"
