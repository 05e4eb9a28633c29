"""The real policies, adapted to the call's seams (sidecar/policy.py).

Pure (no I/O) except `ShedAdmission.acquire`, which waits in the admission queue.
Each adapter is thin: the decisions live in their packages (sidecar/retry,
sidecar/shedding, sidecar/faults); this module only translates their answers into
the seams' `Refusal`s and tokens. `default_policies()` is what sidecar/app.py uses.

Statuses, and why:
- upstream at `limits.max_requests`, or `limits.max_pending` calls already waiting for
  a connection: RESOURCE_EXHAUSTED, `x-sidecar-error: overloaded` (Envoy's circuit
  breaking answers the same);
- adaptive throttling rejected the attempt locally: UNAVAILABLE, `x-sidecar-error:
  throttled` (the SRE book's client-side rejection looks like the backend refusing);
- inbound admission dropped the call: UNAVAILABLE, `x-sidecar-error: overloaded` or
  `deadline`, and `grpc-retry-pushback-ms` (the peer's sidecar may retry elsewhere).
"""

from __future__ import annotations

import random

from sidecar.config import InboundAdmission, UpstreamConfig
from sidecar.faults import FaultAction, FaultTable, decide
from sidecar.metrics import Metrics
from sidecar.outcome import Outcome
from sidecar.policy import AttemptResult, CallPolicy, CallState, Policies, Refusal, Token
from sidecar.retry import LimitToken, UpstreamPolicy
from sidecar.retry.hedging import Hedging
from sidecar.retry.metrics import RetryMetrics
from sidecar.shedding import Admission, AdmissionToken, Dropped
from sidecar.shedding.metrics import SheddingMetrics


class UpstreamCalls:
    """Seam (a) for one upstream: limits, throttling, retries (sidecar/retry)."""

    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        rng: random.Random | None = None,
        metrics: RetryMetrics | None = None,
    ) -> None:
        self.policy = UpstreamPolicy(name, config, rng, metrics)
        self._throttled = Refusal(
            "throttled",
            f"sidecar throttled this call to upstream {name}: most recent calls to it failed "
            f"(client-side adaptive throttling; see throttling.k)",
            "UNAVAILABLE",
        )
        limits = self.policy.limits
        self._overloaded = Refusal(
            "overloaded",
            f"upstream {name} already has {limits.max_requests} calls in flight "
            f"(limits.max_requests): failing fast",
        )
        self._pending_full = Refusal(
            "overloaded",
            f"upstream {name} already has {limits.max_pending} calls waiting for a "
            f"connection (limits.max_pending): failing fast",
        )

    def for_route(self, config: UpstreamConfig) -> UpstreamCalls:
        """The same upstream with a route's own retry policy (`config.retries`, its own
        budget): limits and throttling stay shared, as they count per upstream. Built,
        not copied: copy.copy cannot copy a compiled (mypyc) object."""
        policy = self.policy
        twin = UpstreamCalls(policy.name, config, policy.rng, policy.metrics)
        twin.policy.limits = policy.limits
        twin.policy.throttle = policy.throttle
        return twin

    def begin(self, now: float) -> CallState | Refusal:
        token = self.policy.limits.try_acquire()
        if token is None:
            return self._overloaded
        self.policy.on_call(now)  # a deposit into the retry budget, once per call
        return _AdmittedCall(self, token)


class _AdmittedCall:
    __slots__ = ("_calls", "_token")

    def __init__(self, calls: UpstreamCalls, token: LimitToken) -> None:
        self._calls = calls
        self._token = token

    def attempt(self, now: float) -> Refusal | None:
        # retries ask too: that is what keeps them from hammering an overloaded upstream
        if self._calls.policy.allow_attempt(now):
            return None
        return self._calls._throttled

    def pending(self) -> Refusal | None:
        return None if self._token.try_enter_pending() else self._calls._pending_full

    def connected(self) -> None:
        self._token.leave_pending()

    def attempt_ended(self, outcome: Outcome, now: float) -> None:
        self._calls.policy.record(now, outcome)

    def attempt_unsent(self, now: float) -> None:
        self._calls.policy.unsent(now)

    def retry(self, result: AttemptResult, now: float) -> float | None:
        retry = self._calls.policy.retry
        if retry is None:
            return None
        remaining = 1e9 if result.remaining_s is None else result.remaining_s
        verdict = retry.decide(
            now,
            status=result.status,
            attempts=result.attempt,
            deadline=now + remaining,
            peer_error=result.sidecar_error,
            pushback=result.pushback,
            response_started=result.committed,
            replayable=result.replayable,
        )
        return verdict.delay_s if verdict.retry else None

    def release(self, outcome: Outcome, now: float) -> None:
        self._token.release()


# How an inbound call's outcome feeds the concurrency limit: the app coped (a latency
# sample), the app could not cope (an adaptive limit shrinks), or it says nothing.
_SUCCESS = frozenset({Outcome.SUCCESS, Outcome.PEER_ERROR})
_DROPPED = frozenset({Outcome.UNAVAILABLE, Outcome.TIMEOUT, Outcome.OVERLOADED})


class _AdmissionRelease:
    __slots__ = ("_token",)

    def __init__(self, token: AdmissionToken) -> None:
        self._token = token

    def release(self, outcome: Outcome, now: float) -> None:
        if outcome in _SUCCESS:
            self._token.success()
        elif outcome in _DROPPED:
            self._token.dropped()
        else:
            self._token.ignore()


class ShedAdmission:
    """Seam (b): inbound admission (sidecar/shedding) in front of the local app."""

    def __init__(self, config: InboundAdmission, metrics: SheddingMetrics | None = None) -> None:
        self.admission = Admission(config, metrics)

    async def acquire(self, priority: str | None, deadline: float | None) -> Token | Refusal:
        try:
            token = await self.admission.acquire(priority, deadline)
        except Dropped as drop:
            return Refusal(drop.reason, _DROP_MESSAGES[drop.reason], drop.status, drop.pushback_ms)
        return _AdmissionRelease(token)


_DROP_MESSAGES = {
    "overloaded": "dropped by the sidecar before reaching the app: the app is at its "
    "concurrency limit and its queue is full or too slow (inbound.admission); retry elsewhere",
    "deadline": "dropped by the sidecar before reaching the app: the call's remaining deadline "
    "is too short for it (inbound.admission.min_deadline_ms)",
}


class TableFaults:
    """Seam (c): the faults in force in a `FaultTable`, drawn per call."""

    def __init__(self, table: FaultTable, rng: random.Random | None = None) -> None:
        self.table = table
        self.rng = rng or random.Random()

    def decide(self, direction: str, upstream: str, method: str, now: float) -> FaultAction | None:
        faults = self.table.get(upstream)
        if faults is None:
            return None
        action = decide(faults, self.rng)
        return None if action.delay_s == 0.0 and action.abort_status is None else action


def default_policies(metrics: Metrics | None = None) -> Policies:
    """The policies a running sidecar uses (sidecar/app.py), counting in `metrics` (its
    registry's; None: nowhere)."""
    retries = metrics.retries if metrics is not None else None
    shedding = metrics.shedding if metrics is not None else None
    return Policies(
        calls=lambda name, cfg: UpstreamCalls(name, cfg, metrics=retries),
        route_calls=_route_calls,
        admission=lambda cfg: ShedAdmission(cfg, shedding),
        faults=TableFaults,
        hedging=lambda name, cfg: Hedging(name, cfg, retries),
    )


def _route_calls(base: CallPolicy, name: str, config: UpstreamConfig) -> CallPolicy:
    """A route's own retries on `base` (an UpstreamCalls unless a test replaced it)."""
    return base.for_route(config) if isinstance(base, UpstreamCalls) else base
