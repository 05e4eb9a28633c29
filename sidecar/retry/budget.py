"""Retry budget: retries may add at most a fixed fraction to the request load.

Pure (time is passed in). The Finagle / Linkerd design (Finagle `RetryBudget`,
Linkerd's `retryBudget`): every call deposits `budget_percent`% of a retry, every
retry withdraws one, over a sliding window; `min_retries_per_s` keeps a floor so
a service with little traffic can still retry at all. Within any window,

    retries <= budget_percent/100 * requests + min_retries_per_s * window_s

so with every endpoint failing, attempts stay within (1 + budget) x requests plus
the minimum, whatever `max_attempts` says. A per-call retry limit alone
(`max_attempts = 3`) would triple the load on a service that is already failing.
"""

from __future__ import annotations

from sidecar.retry.window import SlidingCounter


class RetryBudget:
    """One per upstream. `record_request` for every call, `try_withdraw` per retry."""

    def __init__(
        self,
        budget_percent: float,
        min_retries_per_s: float,
        window_s: float = 10.0,
        buckets: int = 10,
    ) -> None:
        self.ratio = budget_percent / 100.0
        self.min_retries_per_s = min_retries_per_s
        self.window_s = window_s
        self._requests = SlidingCounter(window_s, buckets)
        self._retries = SlidingCounter(window_s, buckets)

    def record_request(self, now: float) -> None:
        """A new call (its first attempt, not retries) arrived."""
        self._requests.add(now)

    def balance(self, now: float) -> float:
        """Retries still allowed in the current window (may be fractional)."""
        allowance = self.min_retries_per_s * self.window_s + self.ratio * self._requests.total(now)
        return allowance - self._retries.total(now)

    def can_retry(self, now: float) -> bool:
        return self.balance(now) >= 1.0

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and nothing taken) when exhausted."""
        if not self.can_retry(now):
            return False
        self._retries.add(now)
        return True

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, min_retries_per_s={self.min_retries_per_s}, "
            f"window_s={self.window_s})"
        )
