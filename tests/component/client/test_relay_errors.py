"""The in-process client's calls through its relay (sidecar/client/link.py,
sidecar/h2relay/grpc_client.py): what a peer or a bad request can do to them. A real
grpc.aio echo backend on loopback, and raw TCP servers that misbehave; each failure must
be a defined status with the sidecar's reason, and the next call must work."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import grpc
import pytest

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import Echo
from sidecar.h2relay.grpc_client import ClientStream
from sidecar.h2relay.hpack_codec import Block

pytestmark = pytest.mark.timeout(30)


def config(*addresses: str, **extra: Any) -> dict[str, Any]:
    return {"upstreams": {"echo": {"endpoints": list(addresses)}}, **extra}


async def fails(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def reason(err: grpc.aio.AioRpcError) -> Any:
    return dict(err.trailing_metadata()).get("x-sidecar-error")


async def test_a_dead_endpoint_is_a_connect_failure(echo: tuple[Echo, int]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: refused
    async with await sidecar.client.connect("echo", config(dead)) as channel:
        err = await fails(echo_pb2_grpc.EchoStub(channel).Unary(echo_pb2.EchoRequest(), timeout=5))
    sock.close()
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert reason(err) == "connect_failed"
    assert "could not connect" in (err.details() or "")


async def test_the_deadline_ends_the_attempt_and_the_next_call_works(
    echo: tuple[Echo, int],
) -> None:
    servicer, port = echo
    async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        started = time.monotonic()
        err = await fails(stub.Unary(echo_pb2.EchoRequest(delay_ms=5000), timeout=0.3))
        assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.0
        assert (
            await stub.Unary(echo_pb2.EchoRequest(payload=b"next"), timeout=5)
        ).payload == b"next"
    assert servicer.calls == 2


async def test_messages_over_the_limit_both_ways(echo: tuple[Echo, int]) -> None:
    servicer, port = echo
    cfg = config(f"127.0.0.1:{port}", max_message_bytes=4096)
    async with await sidecar.client.connect("echo", cfg) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        err = await fails(stub.Unary(echo_pb2.EchoRequest(payload=b"x" * 5000), timeout=5))
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert servicer.calls == 0  # refused before it was sent
        err = await fails(stub.Unary(echo_pb2.EchoRequest(response_size=100_000), timeout=5))
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(err) == "message_too_large"
        assert (await stub.Unary(echo_pb2.EchoRequest(payload=b"ok"), timeout=5)).payload == b"ok"


async def test_metadata_no_peer_would_take_is_refused(echo: tuple[Echo, int]) -> None:
    servicer, port = echo
    async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for md in ((("X-Upper", "v"),), (("x-text", "line\nbreak"),)):
            err = await fails(stub.Unary(echo_pb2.EchoRequest(), metadata=md, timeout=5))
            assert err.code() is grpc.StatusCode.INTERNAL
            assert reason(err) == "bad_metadata"
        assert servicer.calls == 0
        assert (await stub.Unary(echo_pb2.EchoRequest(payload=b"ok"), timeout=5)).payload == b"ok"


@pytest.mark.parametrize(
    "reply",
    [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n", bytes(range(256)) * 4],
    ids=["closes", "http1", "garbage"],
)
async def test_a_peer_that_is_no_grpc_server(reply: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with await sidecar.client.connect("echo", config(f"127.0.0.1:{port}")) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            for _ in range(2):  # the second call gets a fresh connection, and the same error
                err = await fails(stub.Unary(echo_pb2.EchoRequest(), timeout=5))
                assert err.code() is grpc.StatusCode.UNAVAILABLE
                assert reason(err) == "connection_lost"
    finally:
        server.close()


def _block(*fields: tuple[bytes, bytes]) -> Block:
    return Block(tuple(fields), 0)


@pytest.mark.parametrize(
    ("status", "code"),
    [(b"404", grpc.StatusCode.UNIMPLEMENTED), (b"503", grpc.StatusCode.UNAVAILABLE),
     (b"418", grpc.StatusCode.UNKNOWN)],
)  # fmt: skip
@pytest.mark.parametrize("end_stream", [True, False], ids=["trailers-only", "headers"])
async def test_an_http_status_without_grpc_status(
    status: bytes, code: grpc.StatusCode, end_stream: bool
) -> None:
    stream = ClientStream(asyncio.get_running_loop(), b"", 100, unary=True)
    stream.on_up_headers(_block((b":status", status)), end_stream)
    answer = stream.ended.result()
    assert (answer.code, answer.details) == (
        code.name,
        f"Received http2 header with status: {int(status)}",
    )


async def test_trailers_only_metadata_is_trailing_and_details_are_decoded() -> None:
    stream = ClientStream(asyncio.get_running_loop(), b"", 100, unary=True)
    stream.on_up_headers(
        _block((b":status", b"200"), (b"content-type", b"application/grpc"),
               (b"grpc-status", b"5"), (b"grpc-message", b"caf%C3%A9"),
               (b"x-blob-bin", b"AAH/"), (b"x-note", b"n")),
        True,
    )  # fmt: skip
    answer = stream.ended.result()
    assert answer.code == "NOT_FOUND"
    assert answer.details == "café"
    assert answer.headers == ()
    assert answer.trailers == (("x-blob-bin", b"\x00\x01\xff"), ("x-note", "n"))
