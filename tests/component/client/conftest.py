"""What the in-process client's component tests share: a real grpc.aio echo backend on
loopback whose servicer counts the calls and the cancels it sees."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from meshtest.echo.v1 import echo_pb2_grpc
from services.echo import Echo


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, int]]:
    """The servicer (named "e") and the port it listens on."""
    server = grpc.aio.server()
    servicer = Echo("e")
    echo_pb2_grpc.add_EchoServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(None)
