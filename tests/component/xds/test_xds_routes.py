"""The config's `routes` as a real grpcio xDS client (own process) follows them: header
matchers (exact, regex, inverted present) and weighted clusters, first match wins,
then the upstream's own route (sidecar/xds/rds_rules.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.config import parse_config
from sidecar.xds import UpstreamSnapshot, XdsServer
from tests.component.xds.test_xds_grpcio import NAME, Backends, Client, backends, xds_client

pytestmark = pytest.mark.timeout(120)
__all__ = ["backends"]  # the fixture, used by name

ROUTES = [
    {"match": {"headers": [{"name": "x-canary", "exact": "1"}]}, "upstream": "canary"},
    {"match": {"headers": [{"name": "x-user", "regex": "user-[0-9]+"}]}, "upstream": "canary"},
    {
        "match": {"headers": [{"name": "x-split", "present": True}]},
        "split": [{"upstream": NAME, "weight": 3}, {"upstream": "canary", "weight": 1}],
    },
    {
        "match": {"headers": [{"name": "x-stable", "present": False}, {"name": "x-beta", "present": True}]},
        "upstream": "canary",
    },
]  # fmt: skip


@pytest.fixture
async def routed_xds() -> AsyncIterator[XdsServer]:
    config = parse_config(
        {"upstreams": {NAME: {"endpoints": []}, "canary": {"endpoints": []}}, "routes": ROUTES}
    )
    server = XdsServer("127.0.0.1:0", rules=config.routes)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(None)


@pytest.fixture
async def client(routed_xds: XdsServer, tmp_path: Path) -> AsyncIterator[Client]:
    node = {"id": "routes-client", "locality": {"zone": "a"}}
    async with xds_client(routed_xds.port, tmp_path, node, server_features=["xds_v3"]) as c:
        yield c


async def test_header_routes_and_weighted_clusters(
    routed_xds: XdsServer, backends: Backends, client: Client
) -> None:
    """Each matcher sends its calls to `canary`; a 3:1 split gives both clusters calls in
    roughly that share (gRPC picks per call at random); the rest go to the upstream."""
    await backends.add("stable")
    await backends.add("canary")
    routed_xds.update(
        {
            NAME: UpstreamSnapshot.of([backends.endpoint("stable", "a")], ("a",)),
            "canary": UpstreamSnapshot.of([backends.endpoint("canary", "a")], ("a",)),
        }
    )
    await client.until(lambda c: set(c) == {"stable"})
    await client.until(lambda c: set(c) == {"canary"}, metadata="x-canary=1")
    assert (await client.calls(10, "x-canary=2"))["served_by"] == {"stable": 10}
    assert (await client.calls(10, "x-user=user-7"))["served_by"] == {"canary": 10}
    assert (await client.calls(10, "x-user=user-7x"))["served_by"] == {"stable": 10}
    assert (await client.calls(10, "x-beta=1"))["served_by"] == {"canary": 10}
    assert (await client.calls(10, "x-beta=1 x-stable=1"))["served_by"] == {"stable": 10}
    split = (await client.calls(400, "x-split=1"))["served_by"]
    assert set(split) == {"stable", "canary"} and 60 <= split["canary"] <= 140, split
    (record,) = routed_xds.dump()["clients"]
    assert all(t["nacked"] is None for t in record["types"].values()), record
