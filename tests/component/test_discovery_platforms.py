"""Discovery through the platforms' own answer shapes, served by a real BIND 9.

The records are what CoreDNS's kubernetes plugin and Consul's DNS interface answer (see
tests/platform_dns.py for the shapes and the versions they were read from); the naming
presets find them, the answer parser takes the addresses from the additional section
or, when a server leaves it out, looks the targets up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.rdatatype
import pytest

from sidecar.config import Config, parse_config
from sidecar.discovery import Discovery, DnsClient
from sidecar.discovery.answer import build_endpoints
from sidecar.discovery.names import upstream_names
from sidecar.discovery.resolver import parse_nameservers
from sidecar.endpoint import Endpoint
from tests.dns_servers import BindServer
from tests.platform_dns import (
    ConsulInstance,
    PodEndpoint,
    hex_ip,
    publish_consul_service,
    publish_headless_service,
)

pytestmark = pytest.mark.timeout(60)
ZONES = ["lon3.local", "sto3.local", "consul"]


@pytest.fixture(params=[False, True], ids=["additional", "minimal"])
def bind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BindServer]:
    """BIND serving two clusters' zones and Consul's; with minimal responses, answers
    carry no additional section and every target needs its own lookup."""
    server = BindServer(tmp_path / "bind", minimal_responses=request.param, zones=ZONES)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def config(naming: str, sites: list[str], **discovery: Any) -> Config:
    return parse_config(
        {
            "site": sites[0],
            "discovery": {
                "naming": naming,
                "sites": sites,
                "ttl_floor_s": 0.2,
                "ttl_cap_s": 0.3,  # CoreDNS answers TTL 5 and a 5 s negative TTL: look sooner
                "jitter": 0.0,
                "timeout_s": 0.5,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 0.3,
                "empty_grace_s": 0.5,
                **discovery,
            },
            "upstreams": {"echo": {}},
        }
    )


K8S = {
    "namespace": "music",
    "per_site": {
        "lon3": {"cluster_domain": "lon3.local"},
        "sto3": {"cluster_domain": "sto3.local"},
    },
}


async def resolve(bind: BindServer, name: str, site: str) -> list[Endpoint]:
    answer = await DnsClient(parse_nameservers([bind.nameserver]), 1.0).lookup_srv(name)
    assert answer.kind == "records"
    return build_endpoints(answer.records, answer.addresses, site)


async def test_headless_service_endpoints_through_the_kubernetes_preset(bind: BindServer) -> None:
    """Pod IP targets (dashed, IPv4 and IPv6) and a StatefulSet hostname target become
    endpoints at the Service's port, priority 0 and CoreDNS's equal weights."""
    cfg = config("kubernetes", ["lon3"], **K8S)
    [(_, _, name)] = upstream_names(cfg)
    assert name == "_grpc._tcp.echo.music.svc.lon3.local."
    pods = [PodEndpoint("10.1.0.11"), PodEndpoint("fd00::12"), PodEndpoint("10.1.0.13", "echo-0")]
    publish_headless_service(
        bind,
        service="echo",
        namespace="music",
        cluster_domain="lon3.local",
        port=8181,
        endpoints=pods,
    )
    raw = bind.query(name)
    targets = sorted(rd.target.to_text() for rd in raw.answer[0])
    assert targets == [
        "10-1-0-11.echo.music.svc.lon3.local.",
        "echo-0.echo.music.svc.lon3.local.",
        "fd00--12.echo.music.svc.lon3.local.",
    ]
    assert bool(raw.additional) is not bind.minimal_responses
    assert raw.answer[0].ttl == 5
    assert await resolve(bind, name, "lon3") == [
        Endpoint("10.1.0.11", 8181, "lon3", 0, 33, "10-1-0-11.echo.music.svc.lon3.local"),
        Endpoint("10.1.0.13", 8181, "lon3", 0, 33, "echo-0.echo.music.svc.lon3.local"),
        Endpoint("fd00::12", 8181, "lon3", 0, 33, "fd00--12.echo.music.svc.lon3.local"),
    ]


async def test_consul_node_and_addr_targets_through_the_consul_preset(bind: BindServer) -> None:
    """A node target (the service has no address of its own) and an addr target (it has)
    both resolve; a tagged upstream sees only the tagged instance."""
    cfg = parse_config(
        {
            "site": "dc1",
            "discovery": {"naming": "consul"},
            "upstreams": {
                "web": {},
                "web-v2": {"srv_name": "{tag}.web.service.{site}.consul", "tag": "v2"},
            },
        }
    )
    names = [n for _, _, n in upstream_names(cfg)]
    assert names == ["web.service.dc1.consul.", "v2.web.service.dc1.consul."]
    publish_consul_service(
        bind,
        service="web",
        datacenter="dc1",
        instances=[
            ConsulInstance("node-a", "10.2.0.1", 21000),
            ConsulInstance("node-b", "10.2.0.2", 21001, service_address="10.2.7.7", tags=("v2",)),
        ],
    )
    raw = bind.query(names[0])
    assert {rd.target.to_text() for rd in raw.answer[0]} == {
        "node-a.node.dc1.consul.",
        f"{hex_ip('10.2.7.7')}.addr.dc1.consul.",
    }
    assert hex_ip("10.2.7.7") == "0a020707"
    additional = {(r.name.to_text(), r.rdtype) for r in raw.additional}
    if not bind.minimal_responses:
        assert ("node-a.node.dc1.consul.", dns.rdatatype.A) in additional
        assert ("0a020707.addr.dc1.consul.", dns.rdatatype.A) in additional
    assert await resolve(bind, names[0], "dc1") == [
        Endpoint("10.2.7.7", 21001, "dc1", 1, 1, "0a020707.addr.dc1.consul"),
        Endpoint("10.2.0.1", 21000, "dc1", 1, 1, "node-a.node.dc1.consul"),
    ]
    assert await resolve(bind, names[1], "dc1") == [
        Endpoint("10.2.7.7", 21001, "dc1", 1, 1, "0a020707.addr.dc1.consul"),
    ]


class Sets:
    """The latest endpoint set per site that discovery handed over."""

    def __init__(self) -> None:
        self.by_site: dict[str, list[Endpoint]] = {}
        self.changed = asyncio.Event()

    def __call__(self, upstream: str, site: str, endpoints: list[Endpoint], stale: bool) -> None:
        self.by_site[site] = endpoints
        self.changed.set()

    async def wait(self, want: dict[str, set[str]], within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while {s: {e.host for e in eps} for s, eps in self.by_site.items()} != want:
                self.changed.clear()
                await self.changed.wait()


async def test_kubernetes_two_clusters_one_goes_empty(bind: BindServer) -> None:
    """Both clusters are watched, each in its own suffix; when lon3's Service loses its
    endpoints, lon3's set empties (after the grace) and sto3's stays."""
    publish_headless_service(
        bind,
        service="echo",
        namespace="music",
        cluster_domain="lon3.local",
        port=8181,
        endpoints=[PodEndpoint("10.1.0.1"), PodEndpoint("10.1.0.2")],
    )
    publish_headless_service(
        bind,
        service="echo",
        namespace="music",
        cluster_domain="sto3.local",
        port=8181,
        endpoints=[PodEndpoint("10.3.0.1")],
    )
    sets = Sets()
    disc = Discovery(
        config("kubernetes", ["lon3", "sto3"], nameservers=[bind.nameserver], **K8S), sets
    )
    await disc.start()
    try:
        await sets.wait({"lon3": {"10.1.0.1", "10.1.0.2"}, "sto3": {"10.3.0.1"}})
        publish_headless_service(
            bind,
            service="echo",
            namespace="music",
            cluster_domain="lon3.local",
            port=8181,
            endpoints=[],
        )
        await sets.wait({"lon3": set(), "sto3": {"10.3.0.1"}})
    finally:
        await disc.stop()


async def test_consul_two_datacenters_one_goes_empty(bind: BindServer) -> None:
    """dc1's instances fail their health checks (Consul stops answering them): dc1's set
    empties after the grace, dc2's stays."""
    for dc, addr in (("dc1", "10.2.0.1"), ("dc2", "10.4.0.1")):
        publish_consul_service(
            bind, service="echo", datacenter=dc, instances=[ConsulInstance("n1", addr, 21000)]
        )
    sets = Sets()
    disc = Discovery(config("consul", ["dc1", "dc2"], nameservers=[bind.nameserver]), sets)
    await disc.start()
    try:
        await sets.wait({"dc1": {"10.2.0.1"}, "dc2": {"10.4.0.1"}})
        publish_consul_service(bind, service="echo", datacenter="dc1", instances=[])
        await sets.wait({"dc1": set(), "dc2": {"10.4.0.1"}})
    finally:
        await disc.stop()


async def test_a_site_may_have_nameservers_of_its_own(tmp_path: Path) -> None:
    """Two clusters, two DNS servers: each site's names go to its own server."""
    servers = [BindServer(tmp_path / z, zones=[z]) for z in ("lon3.local", "sto3.local")]
    for s in servers:
        s.start()
    try:
        for s, cd, ip in zip(
            servers, ("lon3.local", "sto3.local"), ("10.1.0.1", "10.3.0.1"), strict=True
        ):
            publish_headless_service(
                s,
                service="echo",
                namespace="music",
                cluster_domain=cd,
                port=8181,
                endpoints=[PodEndpoint(ip)],
            )
        per_site = {
            "lon3": {"cluster_domain": "lon3.local", "nameservers": [servers[0].nameserver]},
            "sto3": {"cluster_domain": "sto3.local", "nameservers": [servers[1].nameserver]},
        }
        sets = Sets()
        disc = Discovery(
            config("kubernetes", ["lon3", "sto3"], namespace="music", per_site=per_site), sets
        )
        await disc.start()
        try:
            await sets.wait({"lon3": {"10.1.0.1"}, "sto3": {"10.3.0.1"}})
        finally:
            await disc.stop()
    finally:
        for s in servers:
            s.stop()
