"""Should this failed attempt be retried, and after how long?

Pure (time and randomness are passed in). `decide()` is the whole rule as one
table, checked top to bottom; the first row that says no is the reason:

| check                                              | reason if not       |
|----------------------------------------------------|---------------------|
| the attempt failed (status != OK)                  | `ok`                |
| nothing was sent back to the caller yet            | `response_started`  |
|   (headers or a message: we cannot take them back) |                     |
| status in `retries.on`, or the request never       | `not_retryable`     |
|   reached an app (peer `x-sidecar-error` is        |                     |
|   `overloaded` or `connect_failed`)                |                     |
| the request can be replayed (unary, or a stream    | `not_buffered`      |
|   still under `buffer_bytes`)                      |                     |
| the peer did not say stop (pushback < 0/garbage)   | `pushback`          |
| attempts < `max_attempts`                          | `max_attempts`      |
| the delay ends before the caller's deadline        | `deadline`          |
| the retry budget has a retry left                  | `budget_exhausted`  |

The budget is consulted last so that only retries which would really be sent
take from it. A retry's delay is the peer's pushback when it sent one (gRPC A6),
else full-jitter backoff. Requests the peer's sidecar dropped before its app saw
them are always safe to repeat, whatever `retries.on` says: the app did nothing.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass

from sidecar.config import Retries
from sidecar.retry.backoff import full_jitter_s, parse_pushback
from sidecar.retry.budget import RetryBudget
from sidecar.retry.metrics import RetryMetrics

# Peer `x-sidecar-error` values meaning no application ever saw the request.
NEVER_DELIVERED = frozenset({"overloaded", "connect_failed"})


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    reason: str  # why not (see the table), or why yes: the status or peer error, lowercased
    delay_s: float = 0.0  # wait this long before the next attempt (only when retry)


def decide(
    *,
    status: str,
    peer_error: str | None,
    pushback: str | bytes | None,
    response_started: bool,
    replayable: bool,
    attempts: int,
    max_attempts: int,
    retry_on: Collection[str],
    remaining_s: float,
    backoff_s: float,
    budget_ok: bool = True,
) -> RetryDecision:
    """The retry table without side effects; `budget_ok` is the budget's answer."""
    if status == "OK":
        return RetryDecision(False, "ok")
    if response_started:
        return RetryDecision(False, "response_started")
    never_delivered = peer_error in NEVER_DELIVERED
    if not never_delivered and status not in retry_on:
        return RetryDecision(False, "not_retryable")
    if not replayable:
        return RetryDecision(False, "not_buffered")
    push = parse_pushback(pushback)
    if push.stop:
        return RetryDecision(False, "pushback")
    if attempts >= max_attempts:
        return RetryDecision(False, "max_attempts")
    delay = push.delay_s if push.delay_s is not None else backoff_s
    if delay >= remaining_s:
        return RetryDecision(False, "deadline")
    if not budget_ok:
        return RetryDecision(False, "budget_exhausted")
    reason = peer_error if never_delivered and peer_error is not None else status.lower()
    return RetryDecision(True, reason, delay)


class RetryPolicy:
    """One per upstream with `retries` configured.

    `on_call(now)` once per call; `decide(now, ...)` after each failed attempt.
    A "yes" has already taken its retry from the budget and been counted.
    """

    def __init__(
        self,
        upstream: str,
        config: Retries,
        rng: random.Random,
        metrics: RetryMetrics | None = None,
    ) -> None:
        self.upstream = upstream
        self.metrics = metrics or RetryMetrics()
        self.config = config
        self.rng = rng
        self.budget = RetryBudget(
            config.budget_percent, config.min_retries_per_s, config.budget_window_s
        )
        self._retry_on = frozenset(config.on)

    def on_call(self, now: float) -> None:
        """A new call to this upstream starts (deposits into the retry budget)."""
        self.budget.record_request(now)

    def decide(
        self,
        now: float,
        *,
        status: str,
        attempts: int,
        deadline: float,
        peer_error: str | None = None,
        pushback: str | bytes | None = None,
        response_started: bool = False,
        replayable: bool = True,
    ) -> RetryDecision:
        """Retry the attempt that just ended with `status`? `attempts` made so far (>= 1)."""
        cfg = self.config
        backoff = full_jitter_s(max(1, attempts), cfg.backoff_base_ms, cfg.backoff_max_ms, self.rng)
        verdict = decide(
            status=status,
            peer_error=peer_error,
            pushback=pushback,
            response_started=response_started,
            replayable=replayable,
            attempts=attempts,
            max_attempts=cfg.max_attempts,
            retry_on=self._retry_on,
            remaining_s=deadline - now,
            backoff_s=backoff,
        )
        if not verdict.retry:
            return verdict
        if not self.budget.try_withdraw(now):
            self.metrics.budget_exhausted.labels(self.upstream).inc()
            return RetryDecision(False, "budget_exhausted")
        self.metrics.retries.labels(self.upstream, verdict.reason).inc()
        return verdict
