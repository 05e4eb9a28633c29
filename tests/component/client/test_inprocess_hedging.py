"""Hedging (gRPC A6, `hedging_policy`) through the in-process client: the same relay
`Call` as the sidecar's listeners, so the same copies, commits and cancels. Three real
grpc.aio echo backends on loopback, one of them slow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import Echo

pytestmark = pytest.mark.timeout(60)
SLOW_MS = 500


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def metric(name: str, upstream: str) -> float:
    return REGISTRY.get_sample_value(name, {"upstream": upstream}) or 0.0


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, tuple[Echo, int]]]:
    """Echo servicers a (slow: every call waits 500 ms first), b and c, with their ports."""
    servers = []
    found: dict[str, tuple[Echo, int]] = {}
    for name in ("a", "b", "c"):
        server = grpc.aio.server()
        servicer = Echo(name)
        echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        found[name] = (servicer, port)
    found["a"][0].delay_ms = SLOW_MS
    try:
        yield found
    finally:
        for server in servers:
            await server.stop(None)


def config(backends: dict[str, tuple[Echo, int]], **hedging: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "echo": {
                "endpoints": [f"127.0.0.1:{port}" for _, port in backends.values()],
                "lb": "round_robin",  # so that a third of first attempts go to the slow one
                "timeout_ms": 5000,
                "hedging_policy": {
                    "max_attempts": 3,
                    "hedging_delay_ms": 20,
                    "budget_percent": 100,
                    **hedging,
                },
            }
        }
    }


async def test_unary_calls_are_answered_by_a_fast_copy(
    backends: dict[str, tuple[Echo, int]],
) -> None:
    """30 calls, about a third first sent to the slow backend: every one is answered by b
    or c (a copy of those a held up went there after 20 ms), hedges and their wins are
    counted, and a sees each of its copies cancelled."""
    slow = backends["a"][0]
    upstream = "echo"
    sent0 = metric("sidecar_hedges_total", upstream)
    won0 = metric("sidecar_hedges_won_total", upstream)
    cancelled0 = metric("sidecar_hedges_cancelled_total", upstream)
    async with await sidecar.client.connect(upstream, config(backends)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        served: list[tuple[str, float]] = []
        for _ in range(30):
            started = time.monotonic()
            reply = await stub.Unary(echo_pb2.EchoRequest(delay_ms=5), timeout=5)
            served.append((reply.served_by, time.monotonic() - started))
    assert {who for who, _ in served} <= {"b", "c"}, served  # a never answered first
    assert slow.calls >= 5  # round robin sent it its share of first attempts
    await until(lambda: slow.cancelled == slow.calls)  # every copy a got was cancelled
    # every copy a got lost and was cancelled; a copy of another backend may lose too
    # (one slower than the delay on a busy machine), so these are bounds, not equalities
    hedges = metric("sidecar_hedges_total", upstream) - sent0
    won = metric("sidecar_hedges_won_total", upstream) - won0
    cancelled = metric("sidecar_hedges_cancelled_total", upstream) - cancelled0
    assert hedges >= won >= 1
    assert cancelled >= slow.calls


async def test_a_server_stream_commits_on_its_first_message(
    backends: dict[str, tuple[Echo, int]],
) -> None:
    """A server stream hedges until a copy's first message: all its messages then come
    from that one backend, in order, and the other copies are cancelled."""
    slow = backends["a"][0]
    async with await sidecar.client.connect("echo", config(backends)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(6):
            replies = [r async for r in stub.ServerStream(echo_pb2.EchoRequest(count=4), timeout=5)]
            assert [r.sequence for r in replies] == [0, 1, 2, 3]
            assert len({r.served_by for r in replies}) == 1
            assert replies[0].served_by != "a"
    await until(lambda: slow.cancelled == slow.calls)
    assert slow.calls >= 1


async def test_a_client_stream_is_replayed_to_every_copy(
    backends: dict[str, tuple[Echo, int]],
) -> None:
    """A client stream's messages reach every copy (replayed from the buffer to the
    copies sent later): the answering fast backend saw all of them."""
    async with await sidecar.client.connect("echo", config(backends)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(6):

            async def requests() -> AsyncIterator[echo_pb2.EchoRequest]:
                for i in range(5):
                    yield echo_pb2.EchoRequest(payload=bytes([i]) * 100)
                    await asyncio.sleep(0.01)

            reply = await stub.ClientStream(requests(), timeout=5)
            assert reply.received == 5
            assert reply.payload == bytes([4]) * 100
            assert reply.served_by in {"b", "c"}


async def test_a_fatal_status_ends_the_call_and_cancels_the_other_copies(
    backends: dict[str, tuple[Echo, int]],
) -> None:
    """b and c fail with INVALID_ARGUMENT (not in non_fatal_status_codes): a call whose
    copy reaches one of them gets that answer; the slow copy is cancelled."""
    for name in ("b", "c"):
        backends[name][0].fail = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    slow = backends["a"][0]
    async with await sidecar.client.connect("echo", config(backends)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(6):
            # a would answer OK: a call first sent to it ends with the copy's answer
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert slow.calls >= 1
    await until(lambda: slow.cancelled == slow.calls)


async def test_non_fatal_statuses_send_the_next_copy_at_once(
    backends: dict[str, tuple[Echo, int]],
) -> None:
    """b and c fail with UNAVAILABLE, listed non-fatal, and the hedging delay is long:
    their failures send the next copy at once, and the call ends with a's answer."""
    for name in ("b", "c"):
        backends[name][0].fail = grpc.StatusCode.UNAVAILABLE.value[0]
    cfg = config(backends, hedging_delay_ms=10_000, non_fatal_status_codes=["UNAVAILABLE"])
    async with await sidecar.client.connect("echo", cfg) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(3):
            reply = await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
            assert reply.served_by == "a"


class PushingBack(Echo):
    """Answers every Unary call UNAVAILABLE with `grpc-retry-pushback-ms: pushback`."""

    def __init__(self, name: str, pushback: str) -> None:
        super().__init__(name)
        self.pushback = pushback

    async def Unary(self, req: echo_pb2.EchoRequest, context: Any) -> Any:
        self.calls += 1
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"{self.name} is busy",
            (("grpc-retry-pushback-ms", self.pushback),),
        )


async def pushing_back(pushback: str) -> tuple[list[PushingBack], list[grpc.aio.Server]]:
    servicers, servers = [], []
    for name in ("p", "q", "r"):
        server = grpc.aio.server()
        servicer = PushingBack(name, pushback)
        echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
        servicer.port = server.add_insecure_port("127.0.0.1:0")  # type: ignore[attr-defined]
        await server.start()
        servicers.append(servicer)
        servers.append(server)
    return servicers, servers


def pushback_config(servicers: list[PushingBack], **hedging: Any) -> dict[str, Any]:
    ports = [s.port for s in servicers]  # type: ignore[attr-defined]
    backends = {s.name: (s, port) for s, port in zip(servicers, ports, strict=True)}
    return config(
        backends,  # type: ignore[arg-type]
        hedging_delay_ms=10_000,
        non_fatal_status_codes=["UNAVAILABLE"],
        **hedging,
    )


async def test_a_pushback_that_says_stop_sends_no_more_copies() -> None:
    """Every backend answers UNAVAILABLE (non-fatal) with pushback -1: no copy follows
    the first, and the caller gets that answer with the backend's own message."""
    servicers, servers = await pushing_back("-1")
    try:
        async with await sidecar.client.connect("echo", pushback_config(servicers)) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Unary(echo_pb2.EchoRequest(), timeout=5)
                assert err.value.code() is grpc.StatusCode.UNAVAILABLE
                assert "is busy" in (err.value.details() or "")
        assert sum(s.calls for s in servicers) == 3  # one attempt per call
    finally:
        for server in servers:
            await server.stop(None)


async def test_a_pushback_delay_paces_the_next_copy() -> None:
    """Pushback 300 ms with a 10 s hedging delay: the second copy goes after the
    pushback, not the delay; with max_attempts 2 the caller then gets its answer."""
    servicers, servers = await pushing_back("300")
    try:
        cfg = pushback_config(servicers, max_attempts=2)
        async with await sidecar.client.connect("echo", cfg) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Unary(echo_pb2.EchoRequest(), timeout=8)
            seconds = time.monotonic() - started
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert sum(s.calls for s in servicers) == 2
        assert 0.25 <= seconds < 5, seconds  # waited for the pushback, not the delay
    finally:
        for server in servers:
            await server.stop(None)


async def test_no_hedge_object_outlives_its_call(
    backends: dict[str, tuple[Echo, int]],
) -> None:
    """With the cyclic garbage collector off, hedged calls leave no leg or hedge behind:
    nothing of a hedged call sits in a reference cycle once it ended."""
    import gc

    from sidecar.h2relay.hedge import Hedge, Leg

    def alive() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, (Leg, Hedge)))

    gc.collect()
    gc.disable()
    try:
        async with await sidecar.client.connect("echo", config(backends)) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(9):
                await stub.Unary(echo_pb2.EchoRequest(delay_ms=5), timeout=5)
            slow = backends["a"][0]
            await until(lambda: slow.cancelled == slow.calls)
            assert slow.calls >= 1
            assert alive() == 0
    finally:
        gc.enable()
