"""The places where policies plug into the call pipeline, and their no-op defaults.

Pure (no I/O) except `Admission.acquire`, which may wait in a queue. Each seam is a
small Protocol; the pipeline (sidecar/proxy/pipeline.py) calls it at one numbered
step. The defaults here admit everything, never retry and inject nothing, so the data
plane works alone; the real policies replace them in sidecar/app.py.

Tokens follow Netflix concurrency-limits' split: the policy decides, the pipeline
enforces, and every token is released exactly once, in a `finally`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sidecar.config import Config, InboundAdmission, Upstream
from sidecar.outcome import Outcome


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


# (a) Upstream limits + adaptive throttling (outbound, once per attempt, before the pick).
class UpstreamGate(Protocol):
    def acquire(self, now: float) -> Token | Refusal: ...


# (b) Retries: one RetryState per call; asked after every attempt.
@dataclass(frozen=True, slots=True)
class AttemptResult:
    attempt: int  # 1 for the first attempt
    status: str  # gRPC status name
    outcome: Outcome
    committed: bool  # something already went back to the caller: a retry is unsafe
    replayable: bool  # the request is still in hand (unary and server-streaming requests)
    pushback_ms: int | None  # the peer's grpc-retry-pushback-ms, if any (negative: do not retry)
    remaining_s: float | None  # time left before the call's deadline


class RetryState(Protocol):
    def backoff(self, result: AttemptResult, now: float) -> float | None:
        """Seconds to wait before another attempt on a different endpoint, or None to stop."""


class RetryPolicy(Protocol):
    def begin(self, now: float) -> RetryState: ...


# (c) Inbound admission: concurrency limit, bounded queue, queue-delay and deadline dropping.
class Admission(Protocol):
    async def acquire(self, deadline: float | None) -> Token | Refusal:
        """Wait (bounded) for a slot. `deadline`: the time.monotonic() at which the caller
        gives up, or None."""
        ...


# (d) Fault injection (delay and/or abort a percentage of calls per upstream).
@dataclass(frozen=True, slots=True)
class Fault:
    delay_s: float = 0.0
    abort_status: str | None = None  # a gRPC status name; None: no abort


class FaultInjector(Protocol):
    def decide(self, direction: str, upstream: str, method: str, now: float) -> Fault | None: ...


# ---- no-op defaults ---------------------------------------------------------------


class _NoToken:
    __slots__ = ()

    def release(self, outcome: Outcome, now: float) -> None:
        return None


NO_TOKEN: Token = _NoToken()


class OpenGate:
    """Admits every attempt (no upstream limits, no throttling)."""

    def acquire(self, now: float) -> Token | Refusal:
        return NO_TOKEN


class _NeverRetry:
    def backoff(self, result: AttemptResult, now: float) -> float | None:
        return None


class NoRetries:
    """One attempt per call."""

    _state = _NeverRetry()

    def begin(self, now: float) -> RetryState:
        return self._state


class AdmitAll:
    """Inbound admission without limits."""

    async def acquire(self, deadline: float | None) -> Token | Refusal:
        return NO_TOKEN


class NoFaults:
    def decide(self, direction: str, upstream: str, method: str, now: float) -> Fault | None:
        return None


# ---- how the composition root builds them ------------------------------------------


@dataclass
class Policies:
    """Factories the composition root (sidecar/app.py) calls once per upstream / listener.

    Each gets its config section (all of which already exist in sidecar/config.py), so a
    policy module plugs in by replacing one factory."""

    gate: Callable[[str, Upstream], UpstreamGate] = lambda name, cfg: OpenGate()
    retries: Callable[[str, Upstream], RetryPolicy] = lambda name, cfg: NoRetries()
    admission: Callable[[InboundAdmission], Admission] = lambda cfg: AdmitAll()
    faults: Callable[[Config], FaultInjector] = lambda cfg: NoFaults()
