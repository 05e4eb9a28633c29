"""The in-process client with SRV discovery (BIND) and the sidecar's retry policy: calls
find endpoints that exist only in DNS, retries move off a dead endpoint, and a call with
nowhere to go says `no_endpoints` as a sidecar would."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.component.xds.test_xds_discovery import Backend
from tests.dns_servers import BindServer, Srv, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def live() -> AsyncIterator[Backend]:
    backend = Backend("live")
    await backend.server.start()
    try:
        yield backend
    finally:
        await backend.server.stop(None)


def config(bind: BindServer) -> dict[str, object]:
    return {
        "site": "a",
        "discovery": {"nameservers": [bind.nameserver], "ttl_floor_s": 0.2},
        "upstreams": {
            "echo": {
                "lb": "round_robin",
                "retries": {"max_attempts": 3, "on": ["UNAVAILABLE"], "backoff_base_ms": 1},
            },
            "nobody": {},
        },
    }


async def test_discovered_endpoints_and_retries(bind: BindServer, live: Backend) -> None:
    """Every call succeeds on the live endpoint although half the SRV records point at a
    closed port: connect failures are retried on the other endpoint."""
    dead = Srv(10, 10, free_port(), "dead.hosts.example.net.")
    bind.set_srv("_echo._grpc.a.example.net.", [live.srv(), dead], ttl=1)
    async with await sidecar.client.connect("echo", config(bind)) as channel:
        assert len(channel.upstream.cluster.hosts) == 2
        stub = echo_pb2_grpc.EchoStub(channel)
        served = [
            (await stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=2)).served_by
            for _ in range(20)
        ]
    assert served == ["live"] * 20


async def test_no_endpoints_is_a_sidecar_error(bind: BindServer) -> None:
    """An upstream with no SRV records fails fast: UNAVAILABLE, x-sidecar-error no_endpoints."""
    async with await sidecar.client.connect("nobody", config(bind), wait_s=1) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Unary(echo_pb2.EchoRequest(), timeout=2)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    assert dict(err.value.trailing_metadata())["x-sidecar-error"] == "no_endpoints"
