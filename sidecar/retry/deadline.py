"""Deadlines and per-try timeouts for one outbound call.

Pure. The caller's deadline bounds the whole call, retries and backoff included
(the Spotify lesson: every hop bounds its waiting). The time left is what the
next hop receives as its own deadline, so a chain of hops shares one budget.
A per-upstream default (`timeout_ms`) applies only when the caller sent none;
an optional `per_try_timeout_ms` keeps one slow endpoint from eating the time a
retry on another endpoint would need.
"""

from __future__ import annotations


def call_deadline(now: float, caller_timeout_s: float | None, default_timeout_ms: float) -> float:
    """Absolute deadline (same clock as `now`) for the whole call.

    `caller_timeout_s` is what grpcio's `context.time_remaining()` returns: None
    when the caller set no deadline.
    """
    if caller_timeout_s is None:
        return now + default_timeout_ms / 1000.0
    return now + max(0.0, caller_timeout_s)


def attempt_timeout_s(now: float, deadline: float, per_try_timeout_ms: float | None) -> float:
    """Timeout for the attempt starting at `now`; <= 0 means the call's time is spent."""
    remaining = deadline - now
    if per_try_timeout_ms is None:
        return remaining
    return min(remaining, per_try_timeout_ms / 1000.0)
