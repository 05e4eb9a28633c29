"""xDS fed by SRV discovery: a real grpcio client (`xds:///playlist`, own process) calls
endpoints that exist only as SRV records in BIND, through `XdsHost` (what `sidecar xds`
runs). Backends are in-test Echo servers with a grpc.health.v1 service whose status the
test sets, so the host's active health checks decide EDS health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshtest.echo.v1 import echo_pb2_grpc
from sidecar.config import parse_config
from sidecar.xds.feed import XdsHost
from tests.component.xds.test_xds_grpcio import Client, Echo, xds_client
from tests.dns_servers import BindServer, Srv

pytestmark = pytest.mark.timeout(120)


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server()
        echo_pb2_grpc.add_EchoServicer_to_server(Echo(name), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def srv(self, priority: int = 10) -> Srv:
        return Srv(priority, 10, self.port, f"{self.name}.hosts.example.net.")

    async def serving(self, ok: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        await self.health.set("", status)


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, Backend]]:
    made = {name: Backend(name) for name in ("a1", "a2", "a3", "b1")}
    for b in made.values():
        await b.server.start()
        await b.serving(True)
    try:
        yield made
    finally:
        for b in made.values():
            await b.server.stop(None)


@pytest.fixture
async def host(bind: BindServer) -> AsyncIterator[XdsHost]:
    config = parse_config(
        {
            "site": "a",
            "discovery": {
                "nameservers": [bind.nameserver],
                "sites": ["a", "b"],
                "ttl_floor_s": 0.2,
                "empty_grace_s": 0,
            },
            "upstreams": {
                "playlist": {
                    "lb": "round_robin",
                    "health_check": {"interval_s": 0.2, "timeout_s": 0.5},
                }
            },
        }
    )
    xds = XdsHost(config, "127.0.0.1:0", refresh_s=0.1)
    await xds.start()
    try:
        yield xds
    finally:
        await xds.stop()


@pytest.fixture
async def client(host: XdsHost, tmp_path: Path) -> AsyncIterator[Client]:
    async with xds_client(host.server.port, tmp_path, {"id": "discovery-test"}) as c:
        yield c


def site(name: str) -> str:
    return f"_playlist._grpc.{name}.example.net."


async def test_srv_records_drive_where_calls_go(
    bind: BindServer, backends: dict[str, Backend], host: XdsHost, client: Client
) -> None:
    """Calls follow SRV records: an added record gets calls, a removed one stops getting
    them; a site whose endpoints fail their health checks hands its calls to the other
    site, and gets them back when they pass again."""
    a1, a2, a3, b1 = (backends[n] for n in ("a1", "a2", "a3", "b1"))
    bind.set_srv(site("a"), [a1.srv(), a2.srv()], ttl=1)
    bind.set_srv(site("b"), [b1.srv()], ttl=1)
    await client.until(lambda c: set(c) == {"a1", "a2"})

    bind.set_srv(site("a"), [a1.srv(), a2.srv(), a3.srv()], ttl=1)
    await client.until(lambda c: set(c) == {"a1", "a2", "a3"}, n=30)

    bind.set_srv(site("a"), [a2.srv(), a3.srv()], ttl=1)
    await client.until(lambda c: set(c) == {"a2", "a3"})

    for b in (a2, a3):
        await b.serving(False)
    result = await client.until(lambda c: set(c) == {"b1"})

    for b in (a2, a3):
        await b.serving(True)
    await client.until(lambda c: set(c) == {"a2", "a3"})
    assert not result["errors"], result
    (record,) = host.server.dump()["clients"]
    for type_state in record["types"].values():
        assert type_state["nacked"] is None
