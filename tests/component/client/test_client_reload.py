"""The in-process client's `reload()`: the file read again (or a config handed over),
checked whole, applied to new calls at once while a stream in flight finishes where it
started; a refused config leaves the running one; the sync channel reloads too. Real
grpc.aio echo backends on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import Echo

pytestmark = pytest.mark.timeout(60)


async def backend(name: str) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(name), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.fixture
async def two() -> AsyncIterator[tuple[int, int]]:
    (a, pa), (b, pb) = await backend("a"), await backend("b")
    try:
        yield pa, pb
    finally:
        await a.stop(None)
        await b.stop(None)


def config(port: int, **upstream: Any) -> dict[str, Any]:
    return {"upstreams": {"echo": {"endpoints": [f"127.0.0.1:{port}"], **upstream}}}


async def test_reload_reads_the_file_again(two: tuple[int, int], tmp_path: Path) -> None:
    """A stream open on `a` ends there; calls after `reload()` go to `b`; a bad file is
    refused with its key and `b` keeps serving."""
    a, b = two
    path = tmp_path / "client.yaml"
    path.write_text(yaml.safe_dump(config(a)))
    async with await sidecar.client.connect("echo", path) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        assert (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).served_by == "a"
        stream = stub.Bidi(timeout=10)
        await stream.write(echo_pb2.EchoRequest(payload=b"1"))
        assert (await stream.read()).served_by == "a"

        path.write_text(yaml.safe_dump(config(b, lb="round_robin", retries={"buffer_bytes": 4096})))
        result = await channel.reload()
        assert result.result == "applied", result
        assert channel.upstream.plane.retry_buffer == 4096  # replays as the new retries say
        assert (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).served_by == "b"
        await stream.write(echo_pb2.EchoRequest(payload=b"2"))
        assert (await stream.read()).served_by == "a"  # in flight: the config it began with
        await stream.done_writing()
        assert await stream.code() == grpc.StatusCode.OK

        path.write_text(yaml.safe_dump(config(a, timeout_ms=-1)))
        refused = await channel.reload()
        assert (refused.result, refused.key) == ("refused", "upstreams.echo.timeout_ms")
        assert (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).served_by == "b"
        assert refused.version.counter == 2


async def test_reload_takes_a_config_and_ignores_other_sidecar_keys(
    two: tuple[int, int],
) -> None:
    """A mapping handed to `reload()`; keys the channel does not use (listeners, admin,
    other upstreams) change nothing and are not refused; a missing upstream is."""
    a, b = two
    async with await sidecar.client.connect("echo", config(a)) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        assert (await channel.reload()).result == "refused"  # no file to read again
        other = {**config(b), "admin": {"listen": "127.0.0.1:1"}, "log": {"format": "json"}}
        other["upstreams"]["else"] = {"endpoints": ["127.0.0.1:2"]}
        assert (await channel.reload(other)).result == "applied"
        assert (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).served_by == "b"
        gone = await channel.reload({"upstreams": {}})
        assert (gone.result, gone.key) == ("refused", "upstreams.echo")
        assert (await stub.Unary(echo_pb2.EchoRequest(), timeout=5)).served_by == "b"


async def test_the_sync_channel_reloads(two: tuple[int, int]) -> None:
    a, b = two

    def run() -> tuple[str, str, str]:
        with sidecar.client.connect_sync("echo", config(a)) as channel:
            stub = echo_pb2_grpc.EchoStub(channel)
            before = stub.Unary(echo_pb2.EchoRequest(), timeout=5).served_by
            result = channel.reload(config(b))
            after = stub.Unary(echo_pb2.EchoRequest(), timeout=5).served_by
            return before, result.result, after

    assert await asyncio.to_thread(run) == ("a", "applied", "b")
