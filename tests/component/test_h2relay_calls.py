"""The h2relay plane in-process against a real grpc.aio backend on loopback: policy
objects that misbehave on purpose (a bug, a throttle on retry), peer pushback, and
`limits.max_pending` while calls wait for a stream slot."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from sidecar.cluster import Cluster
from sidecar.config import UpstreamConfig
from sidecar.endpoint import Endpoint
from sidecar.h2relay.call import Call
from sidecar.h2relay.connection import Settings
from sidecar.h2relay.plane import Plane
from sidecar.h2relay.pool import Pool
from sidecar.outcome import Outcome
from sidecar.policy import AttemptResult, CallState, OneAttempt, Refusal
from sidecar.policy_adapters import UpstreamCalls
from sidecar.route import Route

pytestmark = pytest.mark.timeout(30)
METHOD = "/test.v1.T/Call"


@dataclass
class Backend:
    ports: list[int]
    calls: int = 0
    delay_s: float = 0.0
    status: grpc.StatusCode = grpc.StatusCode.OK
    trailers: tuple[tuple[str, str], ...] = ()
    misbehaving: int = 1 << 30  # calls (the first ones) that get delay_s and status


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    """A raw-bytes grpc.aio server: one stream at a time (MAX_CONCURRENT_STREAMS 1)."""
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1)])
    state = Backend([])

    async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        state.calls += 1
        if state.calls > state.misbehaving:
            return request
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.status is not grpc.StatusCode.OK:
            await context.abort(state.status, "backend says no", state.trailers)
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.v1.T", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
    )
    server.add_generic_rpc_handlers((handler,))
    # three ports: three endpoints for the balancer, one process counting the calls
    state.ports = [server.add_insecure_port("127.0.0.1:0") for _ in range(3)]
    await server.start()
    try:
        yield state
    finally:
        await server.stop(0)


async def relay(
    backend: Backend,
    calls: Any,
    pool: Pool | None = None,
    endpoints: int = 1,
    per_try_timeout_s: float | None = None,
) -> tuple[Plane, int, Pool]:
    cluster = Cluster("t", sites=("local",), breaker=None)
    eps = [Endpoint("127.0.0.1", p, site="local") for p in backend.ports[:endpoints]]
    cluster.update("local", eps, 0.0)
    route = Route(
        "t", cluster, 5.0, calls=calls or OneAttempt(), per_try_timeout_s=per_try_timeout_s
    )
    pool = pool or Pool()
    plane = Plane("outbound", lambda m, _a=None: route if m == METHOD else None, pool, new_call=Call,
                  max_message_bytes=1 << 20)  # fmt: skip
    return plane, await plane.listen("127.0.0.1", 0), pool


async def call(port: int, n: int = 1, body: bytes = b"hi") -> list[tuple[str, str, str]]:
    """`n` concurrent calls on one channel: (status name, details, x-sidecar-error)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        method: Callable[..., Any] = ch.unary_unary(METHOD)

        async def one() -> tuple[str, str, str]:
            try:
                await method(body, timeout=5)
                return ("OK", "", "")
            except grpc.aio.AioRpcError as err:
                trailers = dict(err.trailing_metadata() or ())
                return (
                    err.code().name,
                    err.details() or "",
                    str(trailers.get("x-sidecar-error", "")),
                )

        return list(await asyncio.gather(*(one() for _ in range(n))))


class Raising:
    """A call policy with a bug: begin() raises for every other call."""

    def __init__(self) -> None:
        self.n = 0

    def begin(self, now: float) -> CallState | Refusal:
        self.n += 1
        if self.n % 2:
            raise RuntimeError("a bug in a policy")
        return Retrying(refuse_from=99)


class Retrying:
    """Always retry; refuse (throttle) attempts from number `refuse_from` on."""

    def __init__(self, refuse_from: int) -> None:
        self.refuse_from = refuse_from
        self.attempts = 0

    def attempt(self, now: float) -> Refusal | None:
        self.attempts += 1
        if self.attempts >= self.refuse_from:
            return Refusal("throttled", "throttled by the test policy", "UNAVAILABLE")
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
        return 0.0

    def release(self, outcome: Outcome, now: float) -> None:
        return None


class OnePolicy:
    def __init__(self, state: CallState) -> None:
        self.state = state

    def begin(self, now: float) -> CallState | Refusal:
        return self.state


async def test_a_bug_in_one_call_ends_that_call_not_the_connection(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A policy that raises: that call gets INTERNAL with `x-sidecar-error: internal` and a
    log line; calls before and after it on the same connection succeed."""
    plane, port, pool = await relay(backend, Raising())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            method = ch.unary_unary(METHOD)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await method(b"x", timeout=5)
            trailers = dict(err.value.trailing_metadata() or ())
            assert err.value.code() is grpc.StatusCode.INTERNAL
            assert trailers.get("x-sidecar-error") == "internal"
            (down,) = plane.connections
            assert await method(b"y", timeout=5) == b"y"
            assert plane.connections == {down}  # the same connection carried on
        assert "failed inside the sidecar" in caplog.text
    finally:
        await plane.stop(0)
        await pool.close()


async def test_a_throttled_retry_returns_the_previous_failure(backend: Backend) -> None:
    """The backend answers UNAVAILABLE; the retry is refused by throttling: the caller gets
    the backend's answer (its message, no `x-sidecar-error`), not `throttled`."""
    backend.status = grpc.StatusCode.UNAVAILABLE
    plane, port, pool = await relay(backend, OnePolicy(Retrying(refuse_from=2)))
    try:
        (result,) = await call(port)
        assert result == ("UNAVAILABLE", "backend says no", "")
        assert backend.calls == 1
    finally:
        await plane.stop(0)
        await pool.close()


@pytest.mark.parametrize(("pushback", "attempts"), [("garbage", 1), ("-5", 1), ("1", 3)])
async def test_peer_pushback_garbage_or_negative_stops_retries(
    backend: Backend, pushback: str, attempts: int
) -> None:
    """An UNAVAILABLE with `grpc-retry-pushback-ms`: garbage or negative means "do not
    retry" (one attempt, as the grpcio plane), a number means retry after that long."""
    backend.status = grpc.StatusCode.UNAVAILABLE
    backend.trailers = (("grpc-retry-pushback-ms", pushback),)
    config = UpstreamConfig.model_validate(
        {"endpoints": ["127.0.0.1:1"], "throttling": None, "breaker": {"fail_max": 1000},
         "retries": {"max_attempts": 3, "min_retries_per_s": 100}}
    )  # fmt: skip
    calls = UpstreamCalls("t", config, random.Random(1))
    plane, port, pool = await relay(backend, calls, endpoints=3)
    try:
        (result,) = await call(port)
        assert result[0] == "UNAVAILABLE"
        assert backend.calls == attempts
    finally:
        await plane.stop(0)
        await pool.close()


async def test_a_peer_timing_out_just_before_our_per_try_timer_is_retried(
    backend: Backend,
) -> None:
    """The peer honours the per-try `grpc-timeout` we sent and answers DEADLINE_EXCEEDED
    a hair before our own per-try timer is due: that is our timeout, retried (on another
    endpoint) like one our timer caught; the timer armed for the first try does not end
    the call while it waits out the backoff."""
    backend.delay_s = 0.1975
    backend.status = grpc.StatusCode.DEADLINE_EXCEEDED
    backend.misbehaving = 1
    config = UpstreamConfig.model_validate(
        {"endpoints": ["127.0.0.1:1"], "throttling": None, "breaker": {"fail_max": 1000},
         "retries": {"max_attempts": 3, "on": ["DEADLINE_EXCEEDED"],
                     "backoff_base_ms": 50, "backoff_max_ms": 50}}
    )  # fmt: skip
    calls = UpstreamCalls("t", config, random.Random(1))
    plane, port, pool = await relay(backend, calls, endpoints=3, per_try_timeout_s=0.2)
    try:
        (result,) = await call(port)
        assert result == ("OK", "", "")
        assert backend.calls == 2
    finally:
        await plane.stop(0)
        await pool.close()


async def test_max_pending_fails_fast_beyond_the_waiting_calls(backend: Backend) -> None:
    """One connection to a peer taking one stream at a time (a relay listener advertising
    MAX_CONCURRENT_STREAMS 1), max_pending 2: of 6 calls one runs, two wait for the
    stream slot and succeed, three fail fast with RESOURCE_EXHAUSTED `overloaded`."""
    backend.delay_s = 0.3
    # the peer: a relay inbound listener with one stream slot, in front of the backend
    peer, peer_port, peer_pool = await relay(backend, None)
    peer_plane = Plane("inbound", peer.resolve, peer_pool, new_call=Call, max_message_bytes=1 << 20,
                       settings=Settings(max_streams=1))  # fmt: skip
    peer_port = await peer_plane.listen("127.0.0.1", 0)
    config = UpstreamConfig.model_validate(
        {"endpoints": ["127.0.0.1:1"], "throttling": None, "limits": {"max_pending": 2}}
    )
    calls = UpstreamCalls("t", config, random.Random(1))
    cluster = Cluster("t", sites=("local",), breaker=None)
    cluster.update("local", [Endpoint("127.0.0.1", peer_port, site="local")], 0.0)
    route = Route("t", cluster, 5.0, calls=calls)
    pool = Pool(max_conns=1)
    plane = Plane(
        "outbound", lambda m, _a=None: route, pool, new_call=Call, max_message_bytes=1 << 20
    )
    port = await plane.listen("127.0.0.1", 0)
    try:
        assert (await call(port)) == [("OK", "", "")]  # connected; the peer's SETTINGS known
        results = await call(port, 6)
        codes = sorted((code, why) for code, _, why in results)
        assert codes == [("OK", "")] * 3 + [("RESOURCE_EXHAUSTED", "overloaded")] * 3, results
        assert calls.policy.limits.pending == 0
        assert backend.calls == 4
    finally:
        for p in (plane, peer_plane, peer):
            await p.stop(0)
        for o in (pool, peer_pool):
            await o.close()
