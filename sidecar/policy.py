"""The places where policies plug into a call, and their pass-through defaults.

Pure (no I/O) except `AdmissionPolicy.acquire`, which may wait in a queue. Each seam is a
small Protocol; the relay's call (sidecar/h2relay/call.py) calls it at one numbered
step. The real policies are adapted to these seams in sidecar/policy_adapters.py
(`default_policies()`, what sidecar/app.py uses); the pass-through defaults here serve
the inbound route to the local app and let the data plane run alone in tests.

Tokens follow Netflix concurrency-limits' split: the policy decides, the call
enforces, and every token is released exactly once, when the call ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.config import HedgingPolicy, InboundAdmission, UpstreamConfig
from sidecar.faults import FaultAction, FaultTable
from sidecar.outcome import Outcome
from sidecar.retry.hedging import Hedging


@dataclass(frozen=True, slots=True)
class Refusal:
    """A policy's "no": the caller gets `status` with `x-sidecar-error: reason`."""

    reason: str  # e.g. "overloaded", "throttled", "deadline"
    message: str  # for a person: what happened and what to do
    status: str = "RESOURCE_EXHAUSTED"  # a gRPC status name
    pushback_ms: int | None = None  # sent as grpc-retry-pushback-ms when set


class Token(Protocol):
    def release(self, outcome: Outcome, now: float) -> None:
        """Called exactly once when the admitted work ends (CANCELLED if the caller left)."""


# (a) The upstream call policy: limits, adaptive throttling and retries of one upstream.
# One seam, because all three share the call's lifetime: the limit token is held across
# the call's attempts, throttling is asked before each attempt and told its outcome,
# and the retry decision reads the same attempt.
@dataclass(frozen=True, slots=True)
class AttemptResult:
    attempt: int  # 1 for the first attempt
    status: str  # gRPC status name
    outcome: Outcome
    committed: bool  # something already went back to the caller: a retry is unsafe
    replayable: bool  # the request is still in hand (unary, or a stream still buffered)
    # x-sidecar-error of the answer: the peer sidecar's, or this sidecar's own (e.g.
    # connect_failed); "overloaded"/"connect_failed" mean no app saw the request
    sidecar_error: str | None
    pushback: Any  # the peer's grpc-retry-pushback-ms value as received, or None
    remaining_s: float | None  # time left before the call's deadline


class CallState(Protocol):
    """One call's share of its upstream's policies; released exactly once."""

    def attempt(self, now: float) -> Refusal | None:
        """Before each attempt (after the pick): None to send it, or a refusal."""

    def pending(self) -> Refusal | None:
        """The attempt must wait for its endpoint's connection: None when a pending slot
        (`limits.max_pending`) was taken, to be given back by `connected()`; else a
        fail-fast refusal."""

    def connected(self) -> None:
        """The wait for a connection is over (idempotent; `release` frees the slot too)."""

    def attempt_ended(self, outcome: Outcome, now: float) -> None:
        """An attempt that was sent ended with `outcome`."""

    def attempt_unsent(self, now: float) -> None:
        """An attempt `attempt()` let through was refused here before it was sent
        (`limits.max_pending` full, metadata no peer would take)."""

    def retry(self, result: AttemptResult, now: float) -> float | None:
        """Seconds to wait before another attempt on a different endpoint, or None to stop."""

    def release(self, outcome: Outcome, now: float) -> None:
        """The call ended (exactly once, with its last attempt's outcome)."""


class CallPolicy(Protocol):
    def begin(self, now: float) -> CallState | Refusal:
        """A call to this upstream starts: its state, or a fail-fast refusal."""


# (b) Inbound admission: concurrency limit, bounded queue, queue-delay and deadline dropping.
class AdmissionPolicy(Protocol):
    async def acquire(self, priority: str | None, deadline: float | None) -> Token | Refusal:
        """Wait (bounded) for a slot. `priority`: the caller's `x-sidecar-priority`
        (None: default); `deadline`: the time.monotonic() at which the caller gives up,
        or None."""
        ...


# (c) Fault injection (delay and/or abort a percentage of calls per upstream).
class FaultInjector(Protocol):
    def decide(
        self, direction: str, upstream: str, method: str, now: float
    ) -> FaultAction | None: ...


# ---- pass-through defaults -----------------------------------------------------------


class _PassThrough:
    __slots__ = ()

    def attempt(self, now: float) -> Refusal | None:
        return None

    def pending(self) -> Refusal | None:
        return None

    def connected(self) -> None:
        return None

    def attempt_ended(self, outcome: Outcome, now: float) -> None:
        return None

    def attempt_unsent(self, now: float) -> None:
        return None

    def retry(self, result: AttemptResult, now: float) -> float | None:
        return None

    def release(self, outcome: Outcome, now: float) -> None:
        return None


NO_TOKEN: Token = _PassThrough()


class OneAttempt:
    """No limits, no throttling, one attempt per call."""

    _state = _PassThrough()

    def begin(self, now: float) -> CallState | Refusal:
        return self._state


class AdmitAll:
    """Inbound admission without limits."""

    async def acquire(self, priority: str | None, deadline: float | None) -> Token | Refusal:
        return NO_TOKEN


class NoFaults:
    def decide(self, direction: str, upstream: str, method: str, now: float) -> FaultAction | None:
        return None


# ---- how the composition root builds them ------------------------------------------


@dataclass
class Policies:
    """Factories the composition root (sidecar/app.py) calls once per upstream / listener.

    Each gets its config section, so a policy plugs in by replacing one factory; the
    real ones are `sidecar.policy_adapters.default_policies()`."""

    calls: Callable[[str, UpstreamConfig], CallPolicy] = lambda name, cfg: OneAttempt()
    # a `routes[]` entry's own retries on upstream `name` (cfg: the upstream's section
    # with the route's `retries`): the policy that `calls` made, sharing its limits and
    # throttling (they count per upstream); the pass-through makes one attempt anyway
    route_calls: Callable[[CallPolicy, str, UpstreamConfig], CallPolicy] = lambda base, n, cfg: base
    admission: Callable[[InboundAdmission], AdmissionPolicy] = lambda cfg: AdmitAll()
    # the table holds the faults in force (config, then POST/DELETE /faults)
    faults: Callable[[FaultTable], FaultInjector] = lambda table: NoFaults()
    # hedging (gRPC A6) of an upstream or route with a `hedging_policy` (counted nowhere)
    hedging: Callable[[str, HedgingPolicy], Hedging] = lambda name, cfg: Hedging(name, cfg)
