"""Step 6 of a call: its attempts, their retries, and the bookkeeping of each.

Methods of `Call` (sidecar/h2relay/call.py), written as functions of the call; each is
called through a one-line method of the same name in `Call`'s body.
Does no I/O of its own beyond opening, resetting or closing the attempt's upstream
stream; it decides. Per attempt: pick an endpoint (excluding those tried), ask seam a
(throttling), wait for a pooled connection within `limits.max_pending`, and report the
attempt exactly once (`host.finish`, the call policy, metrics). A failed attempt is
retried only while nothing went back to the caller and the request bytes are still held;
when no retry can go ahead the caller gets the last attempt's answer (`last`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sidecar.h2relay import frames as F
from sidecar.h2relay.request import PreparedResponse
from sidecar.outcome import EXPLAIN, Outcome, classify
from sidecar.policy import AttemptResult, Refusal

if TYPE_CHECKING:
    from sidecar.h2relay.call import Call

_monotonic = time.monotonic
_NONE_TRIED: frozenset[tuple[str, int]] = frozenset()


def next_attempt(self: Call) -> None:
    route = self.req.route
    now = _monotonic()
    if self.deadline is not None and now >= self.deadline:
        self._stop_retrying("DEADLINE_EXCEEDED", self._deadline_message(), "deadline")
        return
    host = route.cluster.pick(now, hash_key=self.req.hash_value, exclude=self.tried or _NONE_TRIED)
    if host is None:
        self._stop_retrying(
            "UNAVAILABLE",
            f"upstream {route.name} has no endpoint to call (check its endpoints or "
            f"discovery, and /clusters on the admin port)",
            "no_endpoints",
        )
        return
    assert self.retry is not None  # began in after_admission
    refusal = self.retry.attempt(now)  # adaptive throttling, per attempt
    if refusal is not None:
        self._stop_retrying(refusal.status, refusal.message, refusal.reason, refusal)
        return
    up = self.plane.pool.get(host.endpoint)
    ready = up.ready and up.has_slot()
    if not ready:
        # waiting for a connection or a stream slot: bounded by limits.max_pending
        limits = self.plane.pending_limits(route)
        if limits is not None:
            if limits.pending >= limits.max_pending:
                self.retry.attempt_unsent(now)
                self._stop_retrying(
                    "RESOURCE_EXHAUSTED",
                    f"upstream {route.name} already has {limits.max_pending} calls "
                    f"waiting for a connection (limits.max_pending): failing fast",
                    "overloaded",
                )
                return
            limits.pending += 1
            self.pending = limits
    self.attempt += 1
    self.host = host
    self.address = host.endpoint.address
    host.start(now)
    self.attempt_started = now
    self.attempt_open = True
    per_try = route.per_try_timeout_s
    if per_try is not None:
        ends = now + per_try
        if self.deadline is None or ends < self.deadline:
            self.try_ends = ends
            self._arm(ends)
        elif self.try_ends is not None:  # an earlier attempt's timer: back to the deadline
            self.try_ends = None
            self._arm(self.deadline)
    if ready:
        self.open_upstream(up)
    else:
        up.waiting.append(self)
        self.up = up


def _leave_pending(self: Call) -> None:
    limits = self.pending
    if limits is not None:
        self.pending = None
        limits.pending -= 1


def _stop_retrying(
    self: Call, status: str, message: str, reason: str | None, refusal: Refusal | None = None
) -> None:
    """No (further) attempt: the caller gets the last attempt's failure when there
    was one (as the grpcio pipeline returns `last`), else this sidecar error."""
    if self.last is not None:
        self._give_last()
    elif refusal is not None:
        self.refuse(refusal)
    else:
        self.fail(status, message, reason)


def _give_last(self: Call) -> None:
    assert self.last is not None
    block, status, message, reason = self.last
    if block is None:
        self.fail(status, message, reason)
    else:
        self.fail(status, "", None, block=block)


def _attempt_failed(self: Call, reason: str, outcome: Outcome, why: str) -> None:
    self._detach_upstream(reset=False)
    self._end_attempt(outcome)
    if self.done:
        return
    message = f"{EXPLAIN[reason]} {self._target()} at {self.address}: {why}"
    self.last = (None, "UNAVAILABLE", message, reason)
    if self._retry(outcome, "UNAVAILABLE", None, reason):
        return
    self.fail("UNAVAILABLE", message, reason)


def _retry(
    self: Call, outcome: Outcome, status: str, pushback: bytes | None, sidecar_error: str | None
) -> bool:
    """Start another attempt if the policy allows and nothing reached the caller."""
    if self.retry is None or self.responded or not self.replayable:
        return False
    now = _monotonic()
    result = AttemptResult(
        attempt=self.attempt,
        status=status,
        outcome=outcome,
        committed=self.responded,
        replayable=self.replayable,
        sidecar_error=sidecar_error,
        pushback=pushback,  # as received: garbage or negative means "stop" (gRPC A6)
        remaining_s=None if self.deadline is None else self.deadline - now,
    )
    backoff = self.retry.retry(result, now)
    if backoff is None:
        return False
    if self.tried is None:
        self.tried = set()
    self.tried.add(self.host.endpoint.key)
    self.up = None
    self.up_sid = 0
    self.up_pending = []
    self.upstream_ended = False  # the next attempt's upstream has not ended
    if backoff > 0:
        self.waiter = self.plane.loop.call_later(backoff, self.guard, self._retry_now)
    else:
        self.next_attempt()
    return True


def _retry_now(self: Call) -> None:
    self.waiter = None
    if not self.done:
        self.next_attempt()
        self.down.kick()


def _upstream_done(self: Call, resp: PreparedResponse) -> Outcome | None:
    """The upstream's final status arrived: its outcome, or None if it is retried
    (the caller reports the attempt with `_end_attempt` once the answer is out)."""
    status = resp.status or "UNKNOWN"
    outcome = classify(status, resp.peer_error)
    if status != "OK" and not self.responded and self.replayable and self.retry is not None:
        # a trailers-only answer: nothing went to the caller, so it may be retried
        self._detach_upstream(reset=not self.req_ended)
        self._end_attempt(outcome)
        self.last = (resp.block, status, "", None)
        if self._retry(outcome, status, resp.pushback_ms, resp.peer_error):
            return None
    return outcome


def _end_attempt(self: Call, outcome: Outcome) -> None:
    """Report the attempt once: host.finish and the call policy (seam a)."""
    if not self.attempt_open:
        return
    self.attempt_open = False
    now = _monotonic()
    self.host.finish(outcome, now - self.attempt_started, now)
    if self.retry is not None:
        self.retry.attempt_ended(outcome, now)
    self.plane.attempt_done(self, outcome)


def _detach_upstream(self: Call, reset: bool) -> None:
    up = self.up
    if up is not None and self.up_sid:
        up.calls.pop(self.up_sid, None)
        up.blocked.discard(self)
        if reset:
            up.conn.reset(self.up_sid, F.CANCEL)
        else:
            up.conn.close_stream(self.up_sid)
        up.kick()
    elif up is not None and self in up.waiting:
        up.waiting.remove(self)
    if self.pending is not None:
        self._leave_pending()


def _cancel_upstream(self: Call, outcome: Outcome) -> None:
    cancel = getattr(self.waiter, "cancel", None)  # admission task or timer
    if cancel is not None:
        cancel()
        self.waiter = None
    self._detach_upstream(reset=not self.upstream_ended)
    self.up = None
    self._end_attempt(outcome)
