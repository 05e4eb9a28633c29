"""The call's one timer: its deadline, and the open attempt's per-try timeout.

Methods of `Call` (sidecar/h2relay/call.py), written as functions of the call; each is
called through a one-line method of the same name in `Call`'s body.
Does I/O only through the plane's timer wheel (timers.py), one slot per call that the
per-try timeout moves earlier and back, and by queueing the answer when time runs out:
DEADLINE_EXCEEDED, `x-sidecar-error: deadline` when no attempt was waiting on the
upstream, `timeout` when one was (the breaker and EWMA then see a TIMEOUT).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sidecar.outcome import EXPLAIN, Outcome

if TYPE_CHECKING:
    from sidecar.h2relay.call import Call

_monotonic = time.monotonic


def _expired(self: Call) -> bool:
    """This attempt's time (per-try timeout, else the deadline) is up, or within 2 ms."""
    ends = self.try_ends or self.deadline
    return ends is not None and _monotonic() >= ends - 0.002


def _arm(self: Call, when: float) -> None:
    """(Re)set the call's one timer: the deadline, or an earlier per-try timeout."""
    wheel = self.plane.wheel
    if self.timer is not None:
        wheel.remove(self.timer, self)
    self.timer = wheel.add(when, self)


def fire(self: Call) -> None:
    """The wheel's callback: the timer's slot came."""
    self.timer = None
    self.guard(self.on_timer)


def on_timer(self: Call) -> None:
    """The call's one timer rang: the deadline, this attempt's per-try timeout, or a
    wake-up left from an attempt that has ended since (then sleep on to what is left)."""
    self.timer = None
    if self.done:
        return
    now = _monotonic()
    deadline = self.deadline
    if deadline is not None and now >= deadline - 0.0005:
        self.on_deadline()
        return
    try_ends = self.try_ends
    if try_ends is not None and self.attempt_open:
        if now >= try_ends - 0.0005:
            self._per_try_timeout()
        else:
            self._arm(try_ends)
        return
    self.try_ends = None
    if deadline is not None:
        self._arm(deadline)


def _per_try_timeout(self: Call) -> None:
    """`per_try_timeout_ms` ran out on this attempt: DEADLINE_EXCEEDED with
    `x-sidecar-error: timeout`, retried only if `retries.on` lists it (the grpcio
    pipeline's rule); the breaker and EWMA see a TIMEOUT."""
    self.try_ends = None
    self._detach_upstream(reset=not self.upstream_ended)
    self.up = None
    self._end_attempt(Outcome.TIMEOUT)
    message = f"{EXPLAIN['timeout']} {self._target()} at {self.address}"
    self.last = (None, "DEADLINE_EXCEEDED", message, "timeout")
    if not self._retry(Outcome.TIMEOUT, "DEADLINE_EXCEEDED", None, "timeout"):
        self.fail("DEADLINE_EXCEEDED", message, "timeout")
    elif not self.done and self.timer is None and self.deadline is not None:
        self._arm(self.deadline)  # a backoff before the next attempt
    self.down.kick()


def on_deadline(self: Call) -> None:
    self.timer = None
    if self.done:
        return
    if not self.attempt_open and self.last is not None:
        self._give_last()  # waiting to retry when the time ran out
        self.down.kick()
        return
    reason = "timeout" if self.attempt_open else "deadline"
    self._cancel_upstream(Outcome.TIMEOUT)
    if reason == "deadline":
        self.fail("DEADLINE_EXCEEDED", self._deadline_message(), "deadline")
    else:
        self.fail(
            "DEADLINE_EXCEEDED",
            f"{EXPLAIN['timeout']} {self._target()} at {self.address}",
            "timeout",
        )
    self.down.kick()


def _deadline_message(self: Call) -> str:
    name = self.req.route.name if self.req.route is not None else "-"
    return (
        f"deadline spent before the sidecar could call {name} "
        f"(raise the caller's deadline or the upstream's timeout_ms)"
    )
