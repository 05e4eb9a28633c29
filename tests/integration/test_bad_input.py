"""Bad input and sidecar-made errors: each gets a defined status or a closed connection,
and the sidecar serves the next call fine."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import Any

import grpc
import pytest

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.conftest import ECHO, Mesh
from tests.integration.procs import MIB, free_port, sidecar_process

pytestmark = pytest.mark.timeout(60)
OPTIONS = [
    ("grpc.max_send_message_length", 64 * MIB),
    ("grpc.max_receive_message_length", 64 * MIB),
]


async def next_call_ok(addr: str) -> None:
    async with grpc.aio.insecure_channel(addr, options=OPTIONS) as ch:
        reply = await echo_pb2_grpc.EchoStub(ch).Unary(
            echo_pb2.EchoRequest(payload=b"ok"), timeout=5
        )
    assert reply.payload == b"ok"


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh TCP connection; return what comes back until it closes."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                got += chunk
    return got


@pytest.mark.parametrize("listener", ["outbound", "inbound"])
@pytest.mark.parametrize(
    "data",
    [b"\x00\x17garbage\xff\xfe" * 64, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"],
    ids=["garbage", "http1"],
)
async def test_garbage_and_http1_closed(mesh: Mesh, listener: str, data: bytes) -> None:
    """Garbage bytes or an HTTP/1.1 request: an error answer then a closed connection."""
    side = mesh.outbound if listener == "outbound" else mesh.inbound
    got = await asyncio.to_thread(raw_exchange, side.port(listener), data)
    # raw_exchange returned, so the listener closed the connection; before that it may
    # answer in HTTP/1.x or send its HTTP/2 preface frames (SETTINGS, GOAWAY)
    assert got == b"" or got.startswith(b"HTTP/1.") or got[3] in (0x04, 0x07)
    await next_call_ok(mesh.outbound_addr)


async def test_no_route(mesh: Mesh) -> None:
    """An unknown service: UNIMPLEMENTED naming the method, x-sidecar-error: no_route."""
    async with grpc.aio.insecure_channel(mesh.outbound_addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary("/nope.v1.Nope/Get")(b"", timeout=5)
    assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "/nope.v1.Nope/Get" in (err.value.details() or "")
    assert dict(err.value.trailing_metadata())["x-sidecar-error"] == "no_route"


async def test_authority_names_the_upstream(mesh: Mesh) -> None:
    """`:authority` equal to an upstream's name routes there when the path does not."""
    for authority in ("echo", "echo:15001"):
        options = [("grpc.default_authority", authority)]
        async with grpc.aio.insecure_channel(mesh.outbound_addr, options=options) as ch:
            reply = await echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(), timeout=5)
            assert reply.served_by == "echo"
            # a service nobody lists reaches the echo app, which answers for itself
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/nope.v1.Nope/Get")(b"", timeout=5)
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert "x-sidecar-error" not in dict(err.value.trailing_metadata() or ())


async def test_dead_endpoint(mesh: Mesh) -> None:
    """A dead endpoint: UNAVAILABLE, x-sidecar-error: connect_failed, naming the address."""
    async with grpc.aio.insecure_channel(mesh.outbound_addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary("/test.dead.v1.Dead/Get")(b"", timeout=5)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dict(err.value.trailing_metadata())["x-sidecar-error"] == "connect_failed"
    assert str(mesh.dead_port) in (err.value.details() or "")
    await next_call_ok(mesh.outbound_addr)


async def test_no_endpoints(mesh: Mesh) -> None:
    """An upstream without endpoints: UNAVAILABLE, x-sidecar-error: no_endpoints."""
    async with grpc.aio.insecure_channel(mesh.outbound_addr) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ch.unary_unary("/test.empty.v1.Empty/Get")(b"", timeout=5)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dict(err.value.trailing_metadata())["x-sidecar-error"] == "no_endpoints"


@pytest.mark.parametrize("direction", ["request", "response"])
async def test_oversized_message(mesh: Mesh, direction: str) -> None:
    """Over max_message_bytes (12 MiB here) either way: RESOURCE_EXHAUSTED, then service goes on."""
    big = 13 * MIB
    r = (
        echo_pb2.EchoRequest(payload=b"x" * big)
        if direction == "request"
        else echo_pb2.EchoRequest(response_size=big)
    )
    async with grpc.aio.insecure_channel(mesh.outbound_addr, options=OPTIONS) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await echo_pb2_grpc.EchoStub(ch).Unary(r, timeout=10)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await next_call_ok(mesh.outbound_addr)


class Resetter:
    """A TCP relay in front of a backend that can reset every connection (RST) at once."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        br, bw = await asyncio.open_connection("127.0.0.1", self.backend_port)
        self.writers += [cw, bw]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()

        await asyncio.gather(pipe(cr, bw), pipe(br, cw))

    def reset_all(self) -> None:
        for w in self.writers:
            sock = w.get_extra_info("socket")
            linger_0 = struct.pack("ii", 1, 0)  # close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_0)
            w.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.reset_all()
        if self.server is not None:
            self.server.close()


async def test_peer_resets_mid_stream(mesh: Mesh, tmp_path: Any) -> None:
    """The upstream connection reset mid-stream: the caller gets UNAVAILABLE (not UNKNOWN,
    not a hang), and the next call through the same sidecar works."""
    relay = Resetter(mesh.inbound.port("inbound"))
    await relay.start()
    cfg = {
        "outbound": {"listen": f"127.0.0.1:{free_port()}"},
        "upstreams": {"echo": {"grpc_services": [ECHO], "endpoints": [f"127.0.0.1:{relay.port}"]}},
    }
    try:
        with sidecar_process(tmp_path, "resetting", cfg) as side:
            addr = f"127.0.0.1:{side.port('outbound')}"
            async with grpc.aio.insecure_channel(addr) as ch:
                call = echo_pb2_grpc.EchoStub(ch).ServerStream(
                    echo_pb2.EchoRequest(count=100, delay_ms=20), timeout=10
                )
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for r in call:
                        if r.sequence == 2:
                            relay.reset_all()
                assert err.value.code() is grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - started < 5
            await next_call_ok(addr)
    finally:
        await relay.close()
