"""Hedging (gRPC A6, grpc/proposal A6-client-retries.md "Hedging Policy"): when to send
the next copy of a call, and what a failed copy means for the rest.

Pure (time is passed in). `Hedging` is one upstream's (or one route's) policy, built
from `hedging_policy`; a hedged call keeps one `HedgeSchedule`. The rules, from A6:

1. The first attempt goes at once; while no attempt has answered, another goes every
   `hedging_delay_ms`, up to `max_attempts` in all (`sent`).
2. An answer commits the call (response headers, or a final status that is OK or not in
   `non_fatal_status_codes`): the other attempts are cancelled, no more are sent.
3. A non-fatal status (or a copy no app saw: a connect failure, a peer sidecar's
   `overloaded`, as for retries in sidecar/retry/policy.py) only ends that copy: the next one goes at once, or after the
   peer's `grpc-retry-pushback-ms` when it sent one; the delay runs on from there.
4. A pushback that says stop (negative or garbage): no more copies; the call waits for
   those in flight, and with none left the caller gets this answer.
5. Every copy after the first takes one retry from the budget (`budget_percent` of the
   calls plus `min_retries_per_s`, sidecar/retry/budget.py) and asks adaptive
   throttling like any attempt: hedging cannot multiply the load on a sick upstream.
   A copy refused by either is not sent; the call goes on with those in flight.
"""

from __future__ import annotations

from typing import Final

from sidecar.config import HedgingPolicy
from sidecar.retry.backoff import parse_pushback
from sidecar.retry.budget import RetryBudget
from sidecar.retry.metrics import RetryMetrics
from sidecar.retry.policy import NEVER_DELIVERED

# what a failed copy means (HedgeSchedule.failed)
ANSWER: Final = 0  # a fatal status: the caller gets this answer, the rest are cancelled
SEND: Final = 1  # a non-fatal status: the next copy is due at the time returned
WAIT: Final = 2  # a non-fatal status, but no more copies: wait for those in flight


class Hedging:
    """One upstream's (or route's) hedging policy, and its metric children."""

    __slots__ = (
        "budget",
        "cancelled",
        "delay_s",
        "exhausted",
        "max_attempts",
        "non_fatal",
        "sent",
        "upstream",
        "won",
    )

    def __init__(
        self, upstream: str, config: HedgingPolicy, metrics: RetryMetrics | None = None
    ) -> None:
        self.upstream = upstream
        self.max_attempts = config.max_attempts
        self.delay_s = config.hedging_delay_ms / 1000
        self.non_fatal = frozenset(config.non_fatal_status_codes)
        self.budget = RetryBudget(
            config.budget_percent, config.min_retries_per_s, config.budget_window_s
        )
        # children cached: a label lookup costs more than the increment (metrics None:
        # counted nowhere, a policy built alone)
        m = metrics or RetryMetrics()
        self.sent = m.hedges.labels(upstream)
        self.won = m.hedges_won.labels(upstream)
        self.cancelled = m.hedges_cancelled.labels(upstream)
        self.exhausted = m.hedge_budget_exhausted.labels(upstream)

    def on_call(self, now: float) -> None:
        """A hedged call starts: a deposit into the budget (once per call)."""
        self.budget.record_request(now)

    def allow_hedge(self, now: float) -> bool:
        """A copy after the first is about to go: take it from the budget (counted)."""
        if self.budget.try_withdraw(now):
            return True
        self.exhausted.inc()
        return False

    def __repr__(self) -> str:
        return (
            f"Hedging({self.upstream}: {self.max_attempts} attempts every "
            f"{self.delay_s * 1000:g} ms, non-fatal {sorted(self.non_fatal)})"
        )


class HedgeSchedule:
    """One hedged call's copies: how many went, and when the next is due."""

    __slots__ = ("policy", "sent", "stopped")

    def __init__(self, policy: Hedging) -> None:
        self.policy = policy
        self.sent = 0  # copies sent (the first attempt included)
        self.stopped = False  # no more copies (pushback said stop, or one was refused)

    def more(self) -> bool:
        """Another copy may still go."""
        return not self.stopped and self.sent < self.policy.max_attempts

    def on_sent(self, now: float) -> float | None:
        """A copy went at `now` (rule 1): when the next one is due, or None."""
        self.sent += 1
        if self.sent > 1:
            self.policy.sent.inc()
        return now + self.policy.delay_s if self.more() else None

    def failed(
        self, status: str, peer_error: str | None, pushback: str | bytes | None, now: float
    ) -> tuple[int, float]:
        """A copy ended with a non-OK status before the call committed (rules 2-4):
        (ANSWER, 0), (SEND, when the next copy is due) or (WAIT, 0)."""
        if status not in self.policy.non_fatal and peer_error not in NEVER_DELIVERED:
            return ANSWER, 0.0
        push = parse_pushback(pushback)
        if push.stop:
            self.stopped = True
        if not self.more():
            return WAIT, 0.0
        return SEND, now if push.delay_s is None else now + push.delay_s

    def stop(self) -> None:
        """No more copies (the budget or throttling refused one, or the call committed)."""
        self.stopped = True

    def __repr__(self) -> str:
        return f"HedgeSchedule({self.sent}/{self.policy.max_attempts} sent, stopped={self.stopped})"
