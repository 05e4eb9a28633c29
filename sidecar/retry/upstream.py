"""Everything a relayed call asks about one upstream, built from its config.

Pure (time and randomness are passed in). The data plane builds one
`UpstreamPolicy` per upstream at start (and on config reload) and calls, per call:

1. `deadline(now, caller_timeout_s)`: the call's absolute deadline. First, so
   that every later wait (pending, backoff, attempts) is bounded by it.
2. `limits.acquire()`: fail fast past `max_requests` (`token.pending()` while
   waiting for a connection, past `max_pending`). Before picking an endpoint, so
   an overloaded upstream costs no balancer work.
3. `on_call(now)`: deposits into the retry budget (one per call, not per attempt).
4. per attempt: `allow_attempt(now)` (adaptive throttling; retries too, which is
   what keeps retries from hammering an overloaded upstream), then
   `attempt_timeout(now, deadline)`; after it, `record(now, outcome)`.
5. on failure: `retry.decide(...)`; sleep `delay_s`, pick another endpoint, go to 4.
"""

from __future__ import annotations

import random

from sidecar.config import UpstreamConfig
from sidecar.outcome import Outcome
from sidecar.retry.deadline import attempt_timeout_s, call_deadline
from sidecar.retry.limits import UpstreamLimits
from sidecar.retry.metrics import RetryMetrics
from sidecar.retry.policy import RetryPolicy
from sidecar.retry.throttle import AdaptiveThrottle

THROTTLED_REASON = "throttled"  # `x-sidecar-error` when throttling rejects a first attempt


class UpstreamPolicy:
    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        rng: random.Random | None = None,
        metrics: RetryMetrics | None = None,
    ) -> None:
        self.name = name
        self.metrics = metrics = metrics or RetryMetrics()
        self.config = config
        self.rng = rng if rng is not None else random.Random()
        self.limits = UpstreamLimits(name, config.limits.max_requests, config.limits.max_pending)
        self.retry = (
            RetryPolicy(name, config.retries, self.rng, metrics) if config.retries else None
        )
        t = config.throttling
        self.throttle = (
            AdaptiveThrottle(t.k, t.window_s, min_requests=t.min_requests)
            if t is not None
            else None
        )

    def deadline(self, now: float, caller_timeout_s: float | None) -> float:
        """The call's absolute deadline; `caller_timeout_s` None when the caller sent none."""
        return call_deadline(now, caller_timeout_s, self.config.timeout_ms)

    def attempt_timeout(self, now: float, deadline: float) -> float:
        """Timeout for an attempt starting now (<= 0: the deadline is spent)."""
        return attempt_timeout_s(now, deadline, self.config.per_try_timeout_ms)

    def on_call(self, now: float) -> None:
        if self.retry is not None:
            self.retry.on_call(now)

    def allow_attempt(self, now: float) -> bool:
        """False: do not send this attempt (throttled locally; counted)."""
        if self.throttle is None or self.throttle.allow(now, self.rng):
            return True
        self.metrics.throttled.labels(self.name).inc()
        return False

    def record(self, now: float, outcome: Outcome) -> None:
        """An attempt that was sent ended with `outcome` (from `sidecar.outcome.classify`)."""
        if self.throttle is not None:
            self.throttle.record(now, outcome)

    def unsent(self, now: float) -> None:
        """An attempt `allow_attempt` let through was refused locally before it was sent."""
        if self.throttle is not None:
            self.throttle.unsent(now)
