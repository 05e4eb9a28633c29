"""What the Call unit tests share: one relay plane on a fake clock, a caller on an
in-memory HTTP/2 connection, and a scripted fake upstream behind 1-3 endpoints
(sidecar/testing). The real policies (sidecar/policy_adapters.py's UpstreamCalls,
from an `UpstreamConfig`) decide retries, backoff and the budget; their full jitter
draws its maximum (`MaxJitter`), so every backoff is an exact fake time."""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sidecar.cluster import Cluster
from sidecar.config import Retries, UpstreamConfig
from sidecar.endpoint import Endpoint
from sidecar.h2relay.call import Call
from sidecar.h2relay.grpc_client import Answer, ClientStream
from sidecar.h2relay.plane import Plane
from sidecar.h2relay.pool import Pool
from sidecar.outcome import SIDECAR_ERROR_KEY
from sidecar.policy import FaultInjector
from sidecar.policy_adapters import UpstreamCalls
from sidecar.route import Route
from sidecar.testing import FakeClock, FakeUpstream, H2Pair, Step, h2_pair

METHOD = "/test.v1.T/Call"
ADDRESSES = ("10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051")
TICK = 0.001  # the timer wheel's tick (sidecar/h2relay/timers.py): timers fire up to one late


class MaxJitter(random.Random):
    """Full jitter's uniform(0, ceiling) draws the ceiling: backoff n is exactly
    min(backoff_max_ms, backoff_base_ms * 2**(n-1))."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass
class Rig:
    clock: FakeClock
    upstream: FakeUpstream
    plane: Plane
    pool: Pool
    caller: H2Pair
    cluster: Cluster

    answered: dict[ClientStream, float] = field(default_factory=dict)

    def call(self, *messages: bytes, **kwargs: Any) -> ClientStream:
        """A call of METHOD; the fake time its answer came is kept (`answered_at`)."""
        stream = self.caller.call(METHOD, *messages, **kwargs)
        stream.ended.add_done_callback(lambda _: self.answered.setdefault(stream, self.clock()))
        return stream

    def answered_at(self, stream: ClientStream) -> float:
        return self.answered[stream]

    @property
    def t(self) -> float:
        """The fake time now."""
        return self.clock()


def rig(
    clock: FakeClock,
    *script: Step,
    endpoints: int = 1,
    retries: Retries | None = None,
    per_try_timeout_ms: float | None = None,
    timeout_ms: float = 5000.0,
    retry_buffer: int = 1 << 20,
    faults: FaultInjector | None = None,
) -> Rig:
    """Must be called inside `clock.run(...)` (the plane takes the running loop)."""
    upstream = FakeUpstream(*script).serve(clock.network, *ADDRESSES[:endpoints])
    config = UpstreamConfig(
        timeout_ms=timeout_ms, per_try_timeout_ms=per_try_timeout_ms, retries=retries
    )
    cluster = Cluster("t", sites=("local",), rng=random.Random(7), breaker=None)
    hosts = [Endpoint(a.split(":")[0], int(a.split(":")[1]), site="local") for a in ADDRESSES]
    cluster.update("local", hosts[:endpoints], clock())
    route = Route.from_config("t", config, cluster, UpstreamCalls("t", config, MaxJitter()))
    pool = Pool(clock=clock)
    plane = Plane(
        "outbound",
        lambda method, _authority=None: route if method == METHOD else None,
        pool,
        new_call=Call,
        max_message_bytes=1 << 20,
        retry_buffer=retry_buffer,
        faults=faults,
        clock=clock,
    )
    return Rig(clock, upstream, plane, pool, h2_pair(plane), cluster)


def error(answer: Answer) -> str | None:
    """The answer's `x-sidecar-error` (None: not a sidecar decision)."""
    return dict(answer.trailers).get(SIDECAR_ERROR_KEY)


def at(value: float, expected: float) -> bool:
    """`value` is the fake time `expected` (to float rounding of the sums)."""
    return abs(value - expected) < 1e-9


def by_tick(value: float, expected: float) -> bool:
    """A wheel timer's time: at `expected` or up to one tick after, never before."""
    return expected - 1e-9 <= value <= expected + TICK + 1e-9


def on_fake_clock(test: Callable[[FakeClock], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run the async test on a new FakeClock's loop, sockets and real sleeps refused
    (FakeClock.run): a test that would wait for time it did not advance fails (Stalled)."""

    def run() -> None:
        clock = FakeClock()
        clock.run(test(clock))

    run.__name__ = test.__name__
    run.__qualname__ = test.__qualname__
    run.__doc__ = test.__doc__
    run.__module__ = test.__module__
    return run
