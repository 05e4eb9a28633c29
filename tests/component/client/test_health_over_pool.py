"""Active health checks ride the relay pool's connection to each endpoint
(sidecar/health/checker.py): an endpoint that serves calls and answers checks sees one
TCP connection, and its health verdicts still move the cluster. A real grpc.aio echo
backend with the grpc.health.v1 service, behind a TCP forwarder that counts accepts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import Echo

pytestmark = pytest.mark.timeout(30)


class CountedHealth(health.aio.HealthServicer):  # type: ignore[misc]
    """grpc's health servicer, counting the checks it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    async def Check(self, request: Any, context: Any) -> Any:
        self.checks += 1
        return await super().Check(request, context)


class Forwarder:
    """A TCP forwarder to `port` on loopback that counts the connections it accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        both = asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        task = asyncio.ensure_future(both)
        self.tasks.add(task)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.tasks:
            task.cancel()


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


@pytest.fixture
async def backend() -> AsyncIterator[tuple[CountedHealth, Forwarder, int]]:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(Echo("e"), server)
    checks = CountedHealth()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    forwarder = Forwarder(port)
    address = await forwarder.start()
    try:
        yield checks, forwarder, address
    finally:
        await forwarder.close()
        await server.stop(None)


async def test_checks_and_calls_share_one_connection(
    backend: tuple[CountedHealth, Forwarder, int],
) -> None:
    """Several rounds of checks and calls in between: the endpoint accepted one
    connection; the checks were answered there; NOT_SERVING takes the endpoint out
    and SERVING brings it back."""
    checks, forwarder, port = backend
    cfg = {
        "upstreams": {
            "echo": {
                "endpoints": [f"127.0.0.1:{port}"],
                "health_check": {
                    "interval_s": 0.05,
                    "timeout_s": 1.0,
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 1,
                },
            }
        }
    }
    async with await sidecar.client.connect("echo", cfg) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        (host,) = channel.upstream.cluster.hosts
        for _ in range(5):
            assert (await stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=5)).payload
            await asyncio.sleep(0.05)
        await until(lambda: checks.checks >= 5)
        assert forwarder.accepted == 1
        assert len(channel.upstream.pool) == 1
        await checks.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await until(lambda: host.health is not None and not host.health.healthy)
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        await until(lambda: host.health is not None and host.health.healthy)
        assert forwarder.accepted == 1
