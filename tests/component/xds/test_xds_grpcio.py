"""A real grpcio xDS client (`xds:///playlist`, own process) against our ADS server.

Backends are tiny in-test Echo servers answering with their own name; the client
process makes calls on request and reports who served them. xDS clients take a
moment to converge, so each expectation is polled until it holds, within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from sidecar.endpoint import Endpoint
from sidecar.xds import UpstreamSnapshot, XdsServer, build_resources
from sidecar.xds.resources import LISTENER, Resources

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[3]
CLIENT = Path(__file__).with_name("xds_client.py")
NAME = "playlist"


class Echo(echo_pb2_grpc.EchoServicer):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        self.name = name

    async def Unary(self, request: Any, context: Any) -> Any:
        return echo_pb2.EchoResponse(payload=request.payload, served_by=self.name)


class Backends:
    def __init__(self) -> None:
        self.servers: dict[str, tuple[grpc.aio.Server, int]] = {}

    async def add(self, name: str) -> int:
        server = grpc.aio.server()
        echo_pb2_grpc.add_EchoServicer_to_server(Echo(name), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.servers[name] = (server, port)
        return port

    def endpoint(self, name: str, site: str, priority: int = 10, weight: int = 10) -> Endpoint:
        return Endpoint("127.0.0.1", self.servers[name][1], site, priority, weight, f"{name}.")

    async def close(self) -> None:
        for server, _ in self.servers.values():
            await server.stop(None)


class Client:
    """The grpcio xDS client process: `await client.calls(n)` → who served them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def calls(self, n: int, metadata: str = "") -> dict[str, Any]:
        """`metadata`: `key=value` pairs, space-separated, sent with every call."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{n} {metadata}\n".encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=60)
        assert line, "xds client process exited"
        result: dict[str, Any] = json.loads(line)
        return result

    async def until(
        self,
        expect: Callable[[dict[str, int]], bool],
        *,
        n: int = 20,
        within: float = 30.0,
        metadata: str = "",
    ) -> dict[str, Any]:
        """Call in batches until a batch's served_by counts satisfy `expect`."""
        deadline = time.monotonic() + within
        last: dict[str, Any] = {}
        for _ in range(200):
            last = await self.calls(n, metadata)
            if expect(last["served_by"]):
                return last
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        raise AssertionError(f"never converged; last batch: {last}")


@pytest.fixture
async def xds() -> AsyncIterator[XdsServer]:
    server = XdsServer("127.0.0.1:0")
    await server.start()
    try:
        yield server
    finally:
        await server.stop(None)


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    b = Backends()
    try:
        yield b
    finally:
        await b.close()


@contextlib.asynccontextmanager
async def xds_client(
    port: int, tmp_path: Path, node: dict[str, Any], **server: Any
) -> AsyncIterator[Client]:
    """The client process (xds_client.py, `xds:///playlist`), bootstrapped to the ADS
    server on `port` as `node`; `server`: more fields of the bootstrap's server entry."""
    bootstrap = tmp_path / "bootstrap.json"
    entry = {"server_uri": f"127.0.0.1:{port}", "channel_creds": [{"type": "insecure"}]}
    bootstrap.write_text(json.dumps({"xds_servers": [entry | server], "node": node}))
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP": str(bootstrap), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLIENT), f"xds:///{NAME}", cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield Client(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.fixture
async def client(xds: XdsServer, tmp_path: Path) -> AsyncIterator[Client]:
    node = {"id": "test-client", "locality": {"zone": "a"}}
    async with xds_client(xds.port, tmp_path, node, server_features=["xds_v3"]) as c:
        yield c


def snap(*endpoints: Endpoint, unhealthy: tuple[Endpoint, ...] = ()) -> dict[str, UpstreamSnapshot]:
    return {NAME: UpstreamSnapshot.of(endpoints, ("a", "b"), unhealthy=[e.key for e in unhealthy])}


async def test_calls_follow_endpoint_updates(
    xds: XdsServer, backends: Backends, client: Client
) -> None:
    """Calls reach both backends; an added endpoint gets calls, a removed one stops getting them."""
    for name in ("a1", "a2", "a3"):
        await backends.add(name)
    a1, a2, a3 = (backends.endpoint(n, "a") for n in ("a1", "a2", "a3"))
    xds.update(snap(a1, a2))
    await client.until(lambda c: set(c) == {"a1", "a2"})

    xds.update(snap(a1, a2, a3))
    await client.until(lambda c: set(c) == {"a1", "a2", "a3"}, n=30)

    xds.update(snap(a2, a3))
    await client.until(lambda c: set(c) == {"a2", "a3"})

    dump = xds.dump()
    (record,) = dump["clients"]
    assert record["node_id"] == "test-client"
    for type_state in record["types"].values():
        assert type_state["nacked"] is None
        assert type_state["acked_version"] == type_state["sent_version"]


async def test_unhealthy_local_site_fails_over_to_next_site(
    xds: XdsServer, backends: Backends, client: Client
) -> None:
    """Local site a takes every call; with a unhealthy, calls move to site b, then back."""
    for name in ("a1", "a2", "b1"):
        await backends.add(name)
    a1, a2 = backends.endpoint("a1", "a"), backends.endpoint("a2", "a")
    b1 = backends.endpoint("b1", "b")
    xds.update(snap(a1, a2, b1))
    await client.until(lambda c: set(c) == {"a1", "a2"})

    xds.update(snap(a1, a2, b1, unhealthy=(a1, a2)))
    result = await client.until(lambda c: set(c) == {"b1"})
    assert not result["errors"] or sum(result["errors"].values()) < 20

    xds.update(snap(a1, a2, b1, unhealthy=(a1,)))
    await client.until(lambda c: set(c) == {"a2"})


async def test_srv_priority_within_a_site_is_a_failover_tier(
    xds: XdsServer, backends: Backends, client: Client
) -> None:
    """SRV priority 20 in the local site is used only when priority 10 is gone, before site b."""
    for name in ("p10", "p20", "b1"):
        await backends.add(name)
    p10 = backends.endpoint("p10", "a", priority=10)
    p20 = backends.endpoint("p20", "a", priority=20)
    b1 = backends.endpoint("b1", "b", priority=0)
    xds.update(snap(p10, p20, b1))
    await client.until(lambda c: set(c) == {"p10"})
    xds.update(snap(p10, p20, b1, unhealthy=(p10,)))
    await client.until(lambda c: set(c) == {"p20"})


async def test_invalid_listener_is_nacked_and_recorded(
    xds: XdsServer, backends: Backends, client: Client
) -> None:
    """A listener without the router filter is NACKed; the server records it and keeps serving."""
    await backends.add("a1")
    good = build_resources(snap(backends.endpoint("a1", "a")))
    broken = dict(good.by_type)
    bad_listener = listener_pb2.Listener()
    bad_listener.CopyFrom(good.by_type[LISTENER][NAME])  # type: ignore[arg-type]
    hcm = hcm_pb2.HttpConnectionManager()
    bad_listener.api_listener.api_listener.Unpack(hcm)
    del hcm.http_filters[:]  # no router filter
    bad_listener.api_listener.api_listener.Pack(hcm)
    broken[LISTENER] = {NAME: bad_listener}
    xds.publish(Resources(by_type=broken))
    result = await client.calls(3)
    assert not result["served_by"]

    deadline = time.monotonic() + 30
    lds: dict[str, Any] = {}
    while time.monotonic() < deadline:
        clients = xds.dump()["clients"]
        lds = clients[0]["types"].get(LISTENER, {}) if clients else {}
        if lds.get("nacked"):
            break
        await asyncio.sleep(0.1)
    assert lds.get("nacked"), f"no NACK recorded: {lds}"
    print("grpcio NACK:", lds["nacked"]["message"])
    assert lds["nacked"]["version"] == xds.versions[LISTENER]

    xds.publish(good)
    await client.until(lambda c: set(c) == {"a1"})
    lds = xds.dump()["clients"][0]["types"][LISTENER]
    assert lds["nacked"] is None and lds["acked_version"] == xds.versions[LISTENER]
    assert len(lds["nacks"]) == 1


async def test_srv_weights_shape_the_split(
    xds: XdsServer, backends: Backends, client: Client
) -> None:
    """SRV weights 1:4 in one tier give the heavy endpoint clearly more calls (round_robin ignores
    endpoint weights in gRPC; our per-endpoint localities carry them)."""
    for name in ("light", "heavy"):
        await backends.add(name)
    light = backends.endpoint("light", "a", weight=1)
    heavy = backends.endpoint("heavy", "a", weight=4)
    xds.update(snap(light, heavy))
    result = await client.until(
        lambda c: c.get("light", 0) > 0 and c.get("heavy", 0) > 2 * c["light"], n=200
    )
    assert sum(result["served_by"].values()) == 200
