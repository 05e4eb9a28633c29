"""Our ADS server over a real gRPC stream, driven by a hand-written xDS client, and CSDS."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.rpc import status_pb2

from sidecar.endpoint import Endpoint
from sidecar.xds import UpstreamSnapshot, XdsServer
from sidecar.xds.resources import ENDPOINT, LISTENER

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[3]


def snaps(*ports: int) -> dict[str, UpstreamSnapshot]:
    return {"playlist": UpstreamSnapshot.of([Endpoint("127.0.0.1", p, "a") for p in ports], ("a",))}


@pytest.fixture
async def xds() -> AsyncIterator[XdsServer]:
    server = XdsServer("127.0.0.1:0")
    server.update(snaps(7001))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(None)


class RawClient:
    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(self._gen())

    async def _gen(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (item := await self.requests.get()) is not None:
            yield item

    async def send(
        self,
        type_url: str,
        names: list[str],
        nonce: str = "",
        version: str = "",
        error: str | None = None,
    ) -> None:
        r = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=names, response_nonce=nonce, version_info=version
        )
        r.node.id = "raw"
        if error is not None:
            r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.requests.put(r)

    async def recv(self) -> discovery_pb2.DiscoveryResponse:
        resp = await asyncio.wait_for(self.call.read(), timeout=10)
        assert isinstance(resp, discovery_pb2.DiscoveryResponse)
        return resp

    async def close(self) -> None:
        await self.requests.put(None)
        self.call.cancel()
        await self.channel.close()


async def test_nack_is_recorded_served_on_and_shown_by_csds(xds: XdsServer) -> None:
    """A NACKed EDS is recorded (dump and CSDS say NACKED); the next update is pushed and ACKed."""
    client = RawClient(xds.port)
    try:
        await client.send(ENDPOINT, ["playlist"])
        first = await client.recv()
        cla = endpoint_pb2.ClusterLoadAssignment()
        first.resources[0].Unpack(cla)
        assert cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 7001
        await client.send(ENDPOINT, ["playlist"], first.nonce, "", error="weights look wrong")

        async with grpc.aio.insecure_channel(f"127.0.0.1:{xds.port}") as ch:
            csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(ch)
            for _ in range(100):
                status = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest())
                configs = [c for c in status.config if c.node.id == "raw"]
                items = configs[0].generic_xds_configs if configs else []
                if items and items[0].client_status == dump_pb2.NACKED:
                    break
                await asyncio.sleep(0.05)
            (item,) = items
            assert item.client_status == dump_pb2.NACKED
            assert item.error_state.details == "weights look wrong"
            assert item.xds_config.type_url == ENDPOINT

        assert xds.update(snaps(7001, 7002))
        second = await client.recv()
        assert second.version_info != first.version_info
        await client.send(ENDPOINT, ["playlist"], second.nonce, second.version_info)
        for _ in range(100):
            state = xds.dump()["clients"][0]["types"][ENDPOINT]
            if state["acked_version"] == second.version_info:
                break
            await asyncio.sleep(0.05)
        assert state["nacked"] is None and state["nacks"][0]["message"] == "weights look wrong"
    finally:
        await client.close()


async def test_update_without_change_pushes_nothing_and_keeps_versions(xds: XdsServer) -> None:
    """The same snapshot twice is not a change: versions stay, `update` says False."""
    before = xds.versions
    assert not xds.update(snaps(7001))
    assert xds.versions == before
    assert xds.update(snaps(7002))
    assert xds.versions[ENDPOINT] != before[ENDPOINT] and xds.versions[LISTENER] == before[LISTENER]


async def test_cli_xds_serves_a_config_s_static_endpoints(tmp_path: Path) -> None:
    """`sidecar xds -c FILE` answers LDS for each upstream of the config."""
    config = tmp_path / "sidecar.yaml"
    config.write_text("upstreams:\n  playlist:\n    endpoints: ['127.0.0.1:7001']\n")
    with_port = XdsServer("127.0.0.1:0")
    port = await with_port.start()  # find a free port, then hand it to the CLI
    await with_port.stop(None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "xds",
        "--listen",
        f"127.0.0.1:{port}",
        "-c",
        str(config),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        assert b"serving 1 upstreams" in line
        client = RawClient(port)
        try:
            await client.send(LISTENER, ["playlist"])
            resp = await client.recv()
            assert len(resp.resources) == 1 and resp.resources[0].type_url == LISTENER
        finally:
            await client.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
