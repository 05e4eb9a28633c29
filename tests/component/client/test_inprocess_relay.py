"""The in-process client's four call kinds, each a relay `Call` fed from the client's
in-memory HTTP/2 connection (sidecar/client/link.py): metadata both ways, deadlines,
cancels that reach the backend, a retried attempt, messages over 4 MiB, and a slow
reader holding back a fast writer. Real grpc.aio backends on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import Echo

pytestmark = pytest.mark.timeout(60)
MIB = 1024 * 1024
MD = (("x-custom", "value-1"), ("x-blob-bin", b"\x00\x01\xff"))
LARGE = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def config(*addresses: str, **upstream: Any) -> dict[str, Any]:
    return {
        "max_message_bytes": 16 * MIB,
        "upstreams": {"echo": {"endpoints": list(addresses), **upstream}},
    }


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


@pytest.fixture
async def stub(echo: tuple[Echo, int]) -> AsyncIterator[Any]:
    async with await sidecar.client.connect("echo", config(f"127.0.0.1:{echo[1]}")) as channel:
        yield echo_pb2_grpc.EchoStub(channel)


def req(**kw: Any) -> echo_pb2.EchoRequest:
    return echo_pb2.EchoRequest(**kw)


def assert_echoed(metadata: Any) -> None:
    got = dict(metadata)
    assert got["echo-x-custom"] == "value-1"
    assert got["echo-x-blob-bin"] == b"\x00\x01\xff"
    assert len(got["echo-x-request-id"]) >= 16  # the relay's, as on a sidecar's listener


async def test_the_relay_serves_the_call() -> None:
    """The client's calls are served by its relay plane: one in-memory connection to
    its `Downstream`, the call counted in the outbound metrics of that plane."""
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(Echo("e"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as ch:
            await echo_pb2_grpc.EchoStub(ch).Unary(req(payload=b"x"), timeout=5)
            plane = ch.upstream.plane
            assert len(plane.connections) == 1
            assert plane.direction == "outbound"
            assert plane._in_flight == {"echo": 0}
            assert len(ch.upstream.pool) == 1  # one pooled connection to the endpoint
    finally:
        await server.stop(None)


async def test_metadata_both_ways_all_kinds(stub: Any) -> None:
    """Request metadata (text and -bin) reaches the backend on every kind and comes
    back in the response headers and trailers."""
    call = stub.Unary(req(echo_metadata=True), metadata=MD, timeout=5)
    await call
    assert_echoed(await call.initial_metadata())
    assert_echoed(await call.trailing_metadata())

    call = stub.ServerStream(req(count=2, echo_metadata=True), metadata=MD, timeout=5)
    assert_echoed(await call.initial_metadata())
    assert [r.sequence async for r in call] == [0, 1]
    assert_echoed(await call.trailing_metadata())

    call = stub.ClientStream(iter([req(echo_metadata=True), req()]), metadata=MD, timeout=5)
    assert (await call).received == 2
    assert_echoed(await call.initial_metadata())
    assert_echoed(await call.trailing_metadata())

    call = stub.Bidi(metadata=MD, timeout=5)
    await call.write(req(echo_metadata=True, payload=b"a"))
    assert_echoed(await call.initial_metadata())
    assert (await call.read()).payload == b"a"
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK
    assert_echoed(await call.trailing_metadata())


@pytest.mark.parametrize("kind", ["unary", "server_stream", "client_stream", "bidi"])
async def test_deadline_every_kind(stub: Any, kind: str) -> None:
    """The caller's timeout is the relay call's deadline: DEADLINE_EXCEEDED near it,
    worded by the relay (`x-sidecar-error`), whatever the kind."""
    slow = req(delay_ms=5000, count=3)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        if kind == "unary":
            await stub.Unary(slow, timeout=0.3)
        elif kind == "server_stream":
            async for _ in stub.ServerStream(slow, timeout=0.3):
                pass
        elif kind == "client_stream":
            await stub.ClientStream(iter([slow]), timeout=0.3)
        else:
            async for _ in stub.Bidi(iter([slow]), timeout=0.3):
                pass
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert dict(err.value.trailing_metadata())["x-sidecar-error"] in ("timeout", "deadline")
    assert time.monotonic() - started < 2.0


async def test_cancel_mid_server_stream_reaches_the_backend(
    stub: Any, echo: tuple[Echo, int]
) -> None:
    """`cancel()` in the middle of a server stream resets it; the relay cancels its
    attempt, and the backend's handler is cancelled."""
    servicer, _ = echo
    call = stub.ServerStream(req(count=100, delay_ms=50), timeout=10)
    assert (await call.read()).sequence == 0
    assert call.cancel()
    assert call.cancelled()
    assert await call.code() is grpc.StatusCode.CANCELLED
    await until(lambda: servicer.cancelled == 1)


@pytest.mark.parametrize("kind", ["client_stream", "bidi"])
async def test_cancel_mid_request_stream_reaches_the_backend(kind: str) -> None:
    """A client or bidi stream cancelled after its first message, never half-closed:
    the backend's handler ends at once, long before the call's deadline (the reset
    reached it). grpc.aio ends a reset request stream without cancelling the handler,
    also for a direct grpcio caller, or cancels it at a `yield`: either way it ends."""
    ended = asyncio.Event()
    started = asyncio.Event()

    async def sink(requests: AsyncIterator[bytes], context: Any) -> bytes:
        try:
            async for _ in requests:
                started.set()
        finally:
            ended.set()
        return b""

    async def echoes(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        try:
            async for message in requests:
                started.set()
                yield message
        finally:  # the request stream ended, or the handler was cancelled at its yield
            ended.set()

    if kind == "client_stream":
        handler = grpc.stream_unary_rpc_method_handler(sink)
    else:
        handler = grpc.stream_stream_rpc_method_handler(echoes)
    server, port = await _generic_server("test.Sink", handler)
    try:
        async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as ch:
            if kind == "client_stream":
                call = ch.stream_unary("/test.Sink/Stream")(timeout=10)
            else:
                call = ch.stream_stream("/test.Sink/Stream")(timeout=10)
            await call.write(b"first")
            await asyncio.wait_for(started.wait(), 5)
            if kind == "bidi":
                assert await call.read() == b"first"
            assert not ended.is_set()
            assert call.cancel()
            assert call.cancelled()
            assert await call.code() is grpc.StatusCode.CANCELLED
            await asyncio.wait_for(ended.wait(), 3)  # the deadline is 10 s away
    finally:
        await server.stop(None)


async def _generic_server(service: str, handler: Any) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with one raw-bytes method, `/<service>/Stream`."""
    server = grpc.aio.server(options=LARGE)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {"Stream": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_a_failed_attempt_is_retried_on_the_other_endpoint() -> None:
    """One endpoint answers UNAVAILABLE: the relay's retry policy sends each call on to
    the other, and every call succeeds there."""
    servers, ports, echoes = [], [], []
    for name in ("a", "b"):
        server = grpc.aio.server()
        servicer = Echo(name)
        echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
        echoes.append(servicer)
    echoes[0].fail = grpc.StatusCode.UNAVAILABLE.value[0]
    cfg = config(
        *(f"127.0.0.1:{p}" for p in ports),
        lb="round_robin",
        retries={"max_attempts": 2, "on": ["UNAVAILABLE"], "backoff_base_ms": 1},
    )
    try:
        async with await sidecar.client.connect("echo", cfg) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            served = [(await stub.Unary(req(), timeout=5)).served_by for _ in range(10)]
    finally:
        for server in servers:
            await server.stop(None)
    assert served == ["b"] * 10
    assert echoes[0].calls >= 3  # round robin sent first attempts to "a" too
    assert echoes[1].calls == 10


async def test_messages_over_four_mib_every_kind() -> None:
    """6 MiB messages both ways, on every kind (more than a stream's 4 MiB window)."""
    server = grpc.aio.server(options=LARGE)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo("e"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as ch:
            await _big_messages(echo_pb2_grpc.EchoStub(ch))
    finally:
        await server.stop(None)


async def _big_messages(stub: Any) -> None:
    big = bytes(range(256)) * (6 * MIB // 256)
    assert (await stub.Unary(req(payload=big), timeout=20)).payload == big
    got = [r.payload async for r in stub.ServerStream(req(payload=big, count=2), timeout=20)]
    assert got == [big, big]
    reply = await stub.ClientStream(iter([req(payload=big), req(payload=big)]), timeout=20)
    assert (reply.received, reply.payload) == (2, big)
    got = [r.payload async for r in stub.Bidi(iter([req(payload=big)] * 2), timeout=20)]
    assert got == [big, big]


async def test_a_slow_reader_holds_back_the_backend() -> None:
    """A server stream of 200 x 256 KiB read slowly: flow control (the client's
    stream, the relay, the pooled connection) stops the backend's writes well short
    of the whole stream while the reader waits, and every message arrives after."""
    written = 0
    chunk = b"z" * (256 * 1024)

    async def flood(request: bytes, context: Any) -> AsyncIterator[bytes]:
        nonlocal written
        for _ in range(200):
            yield chunk
            written += 1

    server, port = await _generic_server("test.Flood", grpc.unary_stream_rpc_method_handler(flood))
    try:
        async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as ch:
            call = ch.unary_stream("/test.Flood/Stream")(b"", timeout=30)
            assert await call.read() == chunk
            await asyncio.sleep(1.5)  # the reader dawdles: the writer must stop
            stalled = written
            # ~30 here (the windows and buffers on the way), 128 with the client's
            # stream crediting every byte as it arrives
            assert stalled < 64, f"the backend wrote {stalled} of 200 messages unread"
            received = 1
            while (message := await call.read()) is not grpc.aio.EOF:
                assert message == chunk
                received += 1
            assert received == 200
            assert await call.code() is grpc.StatusCode.OK
    finally:
        await server.stop(None)


async def test_a_fast_writer_waits_for_a_slow_backend() -> None:
    """A client stream into a backend that reads slowly: `write()` waits for the
    window instead of queueing the whole stream in memory."""
    read = 0
    chunk = b"w" * (256 * 1024)
    gate = asyncio.Event()

    async def sink(requests: AsyncIterator[bytes], context: Any) -> bytes:
        nonlocal read
        async for _ in requests:
            read += 1
            if read == 1:
                await gate.wait()
        return str(read).encode()

    server, port = await _generic_server("test.Sink", grpc.stream_unary_rpc_method_handler(sink))
    try:
        async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as ch:
            call = ch.stream_stream("/test.Sink/Stream")(timeout=30)
            wrote = 0

            async def writer() -> None:
                nonlocal wrote
                for _ in range(200):
                    await call.write(chunk)
                    wrote += 1
                await call.done_writing()

            task = asyncio.ensure_future(writer())
            await until(lambda: read == 1)
            await asyncio.sleep(1.0)
            assert wrote < 100, f"{wrote} of 200 writes went through a stalled backend"
            gate.set()
            await task
            assert await call.read() == b"200"
            assert await call.code() is grpc.StatusCode.OK
    finally:
        await server.stop(None)
