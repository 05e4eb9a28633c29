"""The forwarding contract: the same assertions straight to the echo backend, through an
outbound + inbound sidecar pair (real processes), and through the in-process client
(`sidecar.client`, in this test's process) calling the backend's inbound sidecar.

Every assertion applies to all four paths. The in-process client has no hop of its own,
so what the outbound sidecar does as a hop (route by `:path`, drop the caller's
hop-by-hop headers, re-derive `grpc-timeout`) is not exercised on that path: there is
no second connection for it to happen on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.conftest import Mesh
from tests.integration.procs import MIB

pytestmark = pytest.mark.timeout(60)

OPTIONS = [
    ("grpc.max_send_message_length", 64 * MIB),
    ("grpc.max_receive_message_length", 64 * MIB),
]


@pytest.fixture(params=["direct", "sidecar", "inprocess"])
async def stub(request: pytest.FixtureRequest, mesh: Mesh) -> AsyncIterator[Any]:
    """An Echo stub straight to the backend, through the sidecar pair,
    or through the in-process client to the backend's inbound sidecar."""
    if request.param == "inprocess":
        config = {
            "max_message_bytes": 12 * MIB,
            "upstreams": {"echo": {"endpoints": [mesh.inbound_addr], "timeout_ms": 5000}},
        }
        async with await sidecar.client.connect("echo", config) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            stub.via = request.param
            yield stub
        return
    target = mesh.echo_addr if request.param == "direct" else mesh.outbound_addr
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        stub.via = request.param
        yield stub


async def echo_stats(mesh: Mesh) -> dict[str, int]:
    async with grpc.aio.insecure_channel(mesh.echo_addr) as channel:
        reply = await echo_pb2_grpc.EchoStub(channel).Unary(
            echo_pb2.EchoRequest(), metadata=(("x-echo-stats", "1"),)
        )
    return dict(json.loads(reply.payload))


def req(**kw: Any) -> echo_pb2.EchoRequest:
    return echo_pb2.EchoRequest(**kw)


async def test_unary(stub: Any) -> None:
    """A unary call comes back with its payload and the backend's name."""
    reply = await stub.Unary(req(payload=b"hello"), timeout=5)
    assert reply.payload == b"hello"
    assert reply.served_by == "echo"


async def test_server_stream_1000(stub: Any) -> None:
    """A server stream of 1,000 messages arrives whole and in order."""
    seqs = [r.sequence async for r in stub.ServerStream(req(count=1000, payload=b"s"), timeout=20)]
    assert seqs == list(range(1000))


async def test_client_stream_1000(stub: Any) -> None:
    """A client stream of 1,000 messages is counted by the backend."""

    async def gen() -> AsyncIterator[echo_pb2.EchoRequest]:
        for i in range(1000):
            yield req(payload=str(i).encode())

    reply = await stub.ClientStream(gen(), timeout=20)
    assert (reply.received, reply.payload) == (1000, b"999")


async def test_bidi_1000(stub: Any) -> None:
    """A bidi stream answers each of 1,000 messages, in order."""
    call = stub.Bidi(timeout=20)

    async def writer() -> None:
        for i in range(1000):
            await call.write(req(payload=str(i).encode()))
        await call.done_writing()

    task = asyncio.create_task(writer())
    got = [(r.sequence, r.payload) async for r in call]
    await task
    assert got == [(i, str(i).encode()) for i in range(1000)]


async def test_metadata_round_trip(stub: Any) -> None:
    """Request metadata (text, binary, traceparent, x-request-id) reaches the backend and
    comes back in both response headers and trailers, unchanged."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    md = (
        ("x-custom", "value-1"),
        ("x-blob-bin", b"\x00\x01\xff"),
        ("traceparent", tp),
        ("x-request-id", "req-42"),
    )
    call = stub.Unary(req(payload=b"m", echo_metadata=True), metadata=md, timeout=5)
    await call
    headers = dict(await call.initial_metadata())
    trailers = dict(await call.trailing_metadata())
    for got in (headers, trailers):
        assert got["echo-x-custom"] == "value-1"
        assert got["echo-x-blob-bin"] == b"\x00\x01\xff"
        assert got["echo-traceparent"] == tp
        assert got["echo-x-request-id"] == "req-42"
    assert "x-sidecar-error" not in trailers


async def test_request_id_created(stub: Any) -> None:
    """Through the sidecar a call without x-request-id gets one; straight, none appears."""
    call = stub.Unary(req(echo_metadata=True), timeout=5)
    await call
    trailers = dict(await call.trailing_metadata())
    if stub.via != "direct":
        assert len(trailers["echo-x-request-id"]) >= 16
    else:
        assert "echo-x-request-id" not in trailers


ERROR_CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", ERROR_CODES, ids=[c.name for c in ERROR_CODES])
async def test_status_preserved(stub: Any, code: grpc.StatusCode) -> None:
    """Every status code comes back with its details and grpc-status-details-bin exactly."""
    blob = bytes([8, code.value[0], 18, 3]) + b"\x00\xffz"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Unary(
            req(status_code=code.value[0], status_message=f"app says {code.name} é",
                status_details_bin=blob),
            timeout=5,
        )  # fmt: skip
    assert err.value.code() is code
    assert err.value.details() == f"app says {code.name} é"
    trailers = dict(err.value.trailing_metadata())
    assert trailers["grpc-status-details-bin"] == blob
    assert "x-sidecar-error" not in trailers


async def test_stream_fails_midway(stub: Any) -> None:
    """A server stream that fails after 3 messages delivers the 3, then the status."""
    call = stub.ServerStream(
        req(count=10, fail_after=3, status_code=grpc.StatusCode.ABORTED.value[0],
            status_message="stop"),
        timeout=5,
    )  # fmt: skip
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for r in call:
            got.append(r.sequence)
    assert got == [0, 1, 2]
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.ABORTED, "stop")


async def test_deadline_expires(stub: Any) -> None:
    """A call slower than its deadline ends DEADLINE_EXCEEDED near the deadline."""
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Unary(req(delay_ms=3000), timeout=0.3)
    assert err.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0


async def test_cancellation_reaches_backend(stub: Any, mesh: Mesh) -> None:
    """Cancelling a stream mid-way cancels the backend's handler too."""
    before = (await echo_stats(mesh))["cancelled"]
    call = stub.ServerStream(req(count=100, delay_ms=50), timeout=10)
    async for _ in call:
        break
    call.cancel()
    deadline = time.monotonic() + 5
    while (await echo_stats(mesh))["cancelled"] <= before:
        assert time.monotonic() < deadline, "backend never saw the cancel"
        await asyncio.sleep(0.05)


async def test_ten_mib_message(stub: Any) -> None:
    """A 10 MiB request comes back whole."""
    payload = bytes(range(256)) * (10 * MIB // 256)
    reply = await stub.Unary(req(payload=payload), timeout=20)
    assert reply.payload == payload


async def test_hundred_concurrent_calls(stub: Any) -> None:
    """100 concurrent calls all succeed, each with its own answer."""
    replies = await asyncio.gather(
        *(stub.Unary(req(payload=str(i).encode(), delay_ms=20), timeout=20) for i in range(100))
    )
    assert [r.payload for r in replies] == [str(i).encode() for i in range(100)]
