"""The h2relay plane against an upstream that resets our stream with RST_STREAM(CANCEL)
and sends no status, as grpc-go's server does, for instance when the budget we forwarded
(`grpc-timeout`) runs out. The upstream is the relay's own sans-IO HTTP/2 codec on a
loopback socket; the caller is grpcio and sends no deadline (the route's is the one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from sidecar.cluster import Cluster
from sidecar.endpoint import Endpoint
from sidecar.h2relay import frames as F
from sidecar.h2relay.call import Call
from sidecar.h2relay.connection import H2Connection
from sidecar.h2relay.grpcwire import parse_timeout
from sidecar.h2relay.hpack_codec import Block
from sidecar.h2relay.plane import Plane
from sidecar.h2relay.pool import Pool
from sidecar.outcome import Outcome
from sidecar.policy import AttemptResult, CallState, Refusal
from sidecar.route import Route

pytestmark = pytest.mark.timeout(30)
METHOD = "/test.v1.T/Call"
# When the upstream resets a stream, from the `grpc-timeout` it received (None: absent).
When = Callable[[float | None], float]


class ResettingPeer:
    """One server connection that answers nothing and resets each stream with CANCEL
    at `when(budget)` seconds after its headers."""

    def __init__(self, writer: asyncio.StreamWriter, when: When) -> None:
        self.writer = writer
        self.when = when
        self.conn = H2Connection(self, client=False)
        self.flush()

    def flush(self) -> None:
        self.writer.write(self.conn.take())

    def on_headers(self, sid: int, block: Block, end_stream: bool) -> None:
        timeout = dict(block.headers).get(b"grpc-timeout")
        budget = parse_timeout(timeout) if timeout is not None else None
        asyncio.get_running_loop().call_later(self.when(budget), self.reset, sid)

    def reset(self, sid: int) -> None:
        self.conn.reset(sid, F.CANCEL)
        self.flush()

    def on_data(self, sid: int, data: bytes, end_stream: bool, flow: int) -> None:
        self.conn.consumed(sid, flow)

    def on_oversized(self, sid: int) -> None: ...
    def on_reset(self, sid: int, code: int) -> None: ...
    def on_window(self, sid: int) -> None: ...
    def on_goaway(self, last_stream_id: int, code: int) -> None: ...


async def resetting_upstream(when: When) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = ResettingPeer(writer, when)
        try:
            while data := await reader.read(65536):
                peer.conn.receive(data)
                peer.flush()
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


class Recorded:
    """A call policy that lets every attempt through and records how each one ended."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def begin(self, now: float) -> CallState | Refusal:
        return self

    def attempt(self, now: float) -> Refusal | None:
        return None

    def pending(self) -> Refusal | None:
        return None

    def connected(self) -> None:
        return None

    def attempt_ended(self, outcome: Outcome, now: float) -> None:
        self.outcomes.append(outcome)

    def attempt_unsent(self, now: float) -> None:
        return None

    def retry(self, result: AttemptResult, now: float) -> float | None:
        return None

    def release(self, outcome: Outcome, now: float) -> None:
        return None


@pytest.fixture
async def relay() -> AsyncIterator[Callable[..., Any]]:
    """Start a relay to a resetting upstream: `await relay(when, timeout_s)` gives
    (relay port, the call policy's record)."""
    stops: list[Callable[[], Any]] = []

    async def start(when: When, timeout_s: float) -> tuple[int, Recorded]:
        server = await resetting_upstream(when)
        stops.append(server.close)
        cluster = Cluster("t", sites=("local",), breaker=None)
        upstream = server.sockets[0].getsockname()[1]
        cluster.update("local", [Endpoint("127.0.0.1", upstream, site="local")], 0.0)
        policy = Recorded()
        route = Route("t", cluster, timeout_s, calls=policy)
        pool = Pool()
        plane = Plane("outbound", lambda m, _a=None: route if m == METHOD else None, pool, new_call=Call,
                      max_message_bytes=1 << 20)  # fmt: skip
        stops.extend([lambda: plane.stop(0), pool.close])
        return await plane.listen("127.0.0.1", 0), policy

    try:
        yield start
    finally:
        for stop in reversed(stops):
            done = stop()
            if done is not None:
                await done


async def call(port: int) -> tuple[grpc.StatusCode, str | None]:
    """One unary call with no deadline of its own, bounded here: (code, x-sidecar-error)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        method: Any = ch.unary_unary(METHOD)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(method(b"hi"), 3.0)
    trailers = dict(err.value.trailing_metadata() or ())
    return err.value.code(), trailers.get("x-sidecar-error")


async def test_an_upstream_reset_reaches_the_caller_at_once(relay: Any) -> None:
    """The upstream resets the stream 50 ms in, long before the 5 s deadline: the caller
    sees the reset (CANCELLED) at once, not after other traffic on its connection."""
    port, _ = await relay(lambda budget: 0.05, 5.0)
    assert await call(port) == (grpc.StatusCode.CANCELLED, None)


# The reset comes this much before the budget runs out: inside the 2 ms in which an
# attempt counts as expired (deadlines.py), and before our own timer, which never fires early.
EARLY_S = 0.0015


async def test_a_reset_at_our_deadline_is_our_timeout(relay: Any) -> None:
    """The upstream resets with CANCEL as the budget we sent it runs out, just before our
    own timer is due (grpc-go's server at its deadline): the caller gets DEADLINE_EXCEEDED
    with `x-sidecar-error: timeout`, not a CANCELLED that nobody asked for, and the
    attempt counts as a TIMEOUT (breaker, EWMA and throttling must see a hung app)."""
    port, policy = await relay(lambda budget: (budget or 0.0) - EARLY_S, 0.3)
    # twice: the first call also opens the relay's connection upstream, which delays the
    # upstream's clock against ours; on the second the reset comes before our timer
    for _ in range(2):
        assert await call(port) == (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout")
    assert policy.outcomes == [Outcome.TIMEOUT, Outcome.TIMEOUT]
