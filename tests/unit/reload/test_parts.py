"""The sidecar's reload parts (sidecar/reload/parts.py) over real clusters, routes and
fault tables, prepared and committed without I/O: the smallest rebuild per upstream,
state kept where nothing changed, nothing visible before the commit."""

from __future__ import annotations

import time
from typing import Any

from sidecar.cluster import Cluster
from sidecar.config import Config, parse_config
from sidecar.endpoint import Endpoint
from sidecar.faults import FaultTable
from sidecar.h2relay.connection import Settings
from sidecar.h2relay.pool import Pool
from sidecar.mesh import Mesh
from sidecar.outcome import Outcome
from sidecar.policy_adapters import default_policies
from sidecar.reload.parts import (
    AdmissionPart,
    FaultsPart,
    UpstreamsPart,
    configured_faults,
    seeded_cluster,
)
from sidecar.route import Route, Router


def cfg(upstreams: dict[str, Any]) -> Config:
    return parse_config({"outbound": {}, "site": "here", "upstreams": upstreams})


def static(*ports: int, **extra: Any) -> dict[str, Any]:
    return {"endpoints": [f"127.0.0.1:{p}" for p in ports], **extra}


class Host:
    """The upstreams of a host, as sidecar/app.py holds them."""

    def __init__(self, config: Config) -> None:
        self.mesh = Mesh(config, Pool(Settings(), 300.0))
        self.policies = default_policies()
        self.routes = self.mesh.routes(self.policies)
        self.router = Router({n: u.grpc_services for n, u in config.upstreams.items()})
        self.installs = 0
        self.part = UpstreamsPart(self.mesh, self.policies, lambda: self.routes, self.install)

    def install(
        self, config: Config, clusters: dict[str, Cluster], routes: dict[str, Route], router: Router
    ) -> None:
        self.routes, self.router = routes, router
        self.installs += 1

    async def reload(self, old: Config, new: Config) -> Any:
        change = await self.part.prepare(old, new)
        assert self.installs == 0  # prepared: nothing visible yet
        change.commit()
        return change


async def test_an_unchanged_upstream_keeps_its_route_and_cluster() -> None:
    old = cfg({"a": static(1, grpc_services=["A"]), "b": static(2, grpc_services=["B"])})
    new = cfg(
        {"a": static(1, grpc_services=["A"]), "b": static(2, grpc_services=["B"], timeout_ms=5)}
    )
    host = Host(old)
    route_a, route_b = host.routes["a"], host.routes["b"]
    await host.reload(old, new)
    assert host.routes["a"] is route_a  # limits in use, budget, throttling kept
    assert host.routes["b"] is not route_b and host.routes["b"].default_timeout_s == 0.005
    assert host.routes["b"].cluster is route_b.cluster  # a timeout needs no new cluster


async def test_new_static_endpoints_are_diffed_into_the_same_cluster() -> None:
    old, new = cfg({"a": static(1, 2)}), cfg({"a": static(2, 3)})
    host = Host(old)
    cluster = host.mesh.clusters["a"]
    kept = cluster.host(("127.0.0.1", 2))
    assert kept is not None
    kept.start(time.monotonic())
    kept.finish(Outcome.SUCCESS, 0.2, time.monotonic())  # some latency history
    await host.reload(old, new)
    assert host.mesh.clusters["a"] is cluster and host.routes["a"].cluster is cluster
    assert sorted(h.endpoint.port for h in cluster.hosts) == [2, 3]
    assert cluster.host(("127.0.0.1", 2)) is kept  # its breaker and EWMA stay


async def test_a_cluster_key_builds_a_new_cluster_seeded_with_the_old_endpoints() -> None:
    old = cfg({"a": {"grpc_services": ["A"]}})  # discovered: no static endpoints
    new = cfg({"a": {"grpc_services": ["A"], "lb": "round_robin"}})
    host = Host(old)
    found = [Endpoint("10.0.0.1", 80, site="here"), Endpoint("10.0.0.2", 80, site="here")]
    host.mesh.clusters["a"].update("here", found, time.monotonic())
    before = host.routes["a"]
    await host.reload(old, new)
    cluster = host.routes["a"].cluster
    assert cluster is not before.cluster and cluster.lb == "round_robin"
    assert sorted(h.endpoint.address for h in cluster.hosts) == ["10.0.0.1:80", "10.0.0.2:80"]
    assert host.mesh.membership.clusters["a"] is cluster  # discovery feeds the new one
    assert before.cluster.hosts  # calls in flight keep the old cluster whole


async def test_added_and_removed_upstreams_change_the_router() -> None:
    old = cfg({"a": static(1, grpc_services=["A"])})
    new = cfg({"b": static(2, grpc_services=["B"])})
    host = Host(old)
    change = await host.reload(old, new)
    assert host.router.route("/B/Get") == "b" and host.router.route("/A/Get") is None
    assert set(host.routes) == {"b"} and set(host.mesh.clusters) == {"b"}
    assert not change.rediscover  # static upstreams: nothing to look up


async def test_discovery_is_rebuilt_when_an_upstream_is_looked_up_by_another_name() -> None:
    old = cfg({"a": {"grpc_services": ["A"]}})
    new = cfg({"a": {"grpc_services": ["A"], "srv_name": "_a._tcp.elsewhere.net"}})
    host = Host(old)
    first = host.mesh.membership.discovery
    change = await host.reload(old, new)
    assert change.rediscover and host.mesh.membership.discovery is not first
    assert host.mesh.membership.discovery is change.discovery


def test_seeded_cluster_only_takes_sites_it_still_spans() -> None:
    old = Cluster("a", sites=("here", "there"))
    now = time.monotonic()
    old.update("here", [Endpoint("10.0.0.1", 80, site="here")], now)
    old.update("there", [Endpoint("10.0.0.2", 80, site="there")], now)
    new = cfg({"a": {"sites": ["here"]}})
    cluster = seeded_cluster("a", new, old)
    assert [h.endpoint.address for h in cluster.hosts] == ["10.0.0.1:80"]


async def test_faults_change_only_where_the_config_changed() -> None:
    delay = {"delay": {"percent": 50, "ms": 5}}
    old = parse_config({"inbound": {}, "upstreams": {"a": static(1), "b": static(2)}})
    new = parse_config(
        {"inbound": {"faults": delay}, "upstreams": {"a": static(1, faults=delay), "b": static(2)}}
    )
    table = FaultTable(configured_faults(old))
    table.set("b", {"abort": {"percent": 100, "status": "UNAVAILABLE"}})  # at runtime
    targets: list[list[str]] = []
    change = await FaultsPart(table, targets.append).prepare(old, new)
    assert table.get("a") is None  # prepared: not in force yet
    change.commit()
    assert table.get("a") is not None and table.get("app") is not None
    assert table.get("b") is not None  # its config did not change: the runtime fault stays
    assert targets == [["a", "app", "b"]]
    change = await FaultsPart(table).prepare(new, old)
    change.commit()
    assert table.get("a") is None and table.get("app") is None


async def test_admission_is_swapped_at_the_commit() -> None:
    class Plane:
        admission: Any = None

        def set_admission(self, admission: Any) -> None:
            self.admission = admission

    old = parse_config({"inbound": {"admission": {"max_concurrency": 4}}})
    new = parse_config({"inbound": {"admission": {"max_concurrency": 8}}})
    plane = Plane()
    change = await AdmissionPart(default_policies(), lambda: plane).prepare(old, new)
    assert plane.admission is None  # prepared: not in force yet
    change.commit()
    assert plane.admission.admission.config.max_concurrency == 8


def test_a_new_cluster_keeps_what_the_same_health_checks_found() -> None:
    checks = {"health_check": {"interval_s": 1}}
    old_cfg = cfg({"a": static(1, 2, **checks)})
    old = Cluster.from_config("a", old_cfg.upstreams["a"], ["here"])
    old.update("here", [Endpoint("127.0.0.1", p, site="here") for p in (1, 2)], time.monotonic())
    for _ in range(2):  # unhealthy_threshold
        old.record_health_check(("127.0.0.1", 1), False, time.monotonic())
    cluster = seeded_cluster("a", cfg({"a": static(1, 2, lb="round_robin", **checks)}), old)
    sick = cluster.host(("127.0.0.1", 1))
    assert sick is not None and not sick.healthy
    assert [cluster.pick(time.monotonic()).endpoint.port for _ in range(4)] == [2] * 4  # type: ignore[union-attr]
    other_checks = cfg({"a": static(1, 2, health_check={"interval_s": 2})})
    fresh = seeded_cluster("a", other_checks, old).host(("127.0.0.1", 1))
    assert fresh is not None and fresh.healthy  # other checks: their own verdict


async def test_a_reload_keeps_adds_and_removes_hedging() -> None:
    """hedging_policy is a route key: a reload that changes another key of a hedged
    upstream keeps it hedged, one that adds or removes the policy does so."""
    hedged = {"max_attempts": 2, "hedging_delay_ms": 5}
    plain = cfg({"a": static(1)})
    old = cfg({"a": static(1, hedging_policy=hedged)})
    host = Host(old)
    assert host.routes["a"].hedging is not None
    retimed = cfg({"a": static(1, hedging_policy=hedged, timeout_ms=5)})
    await host.reload(old, retimed)
    kept = host.routes["a"].hedging
    assert kept is not None and kept.max_attempts == 2
    host.installs = 0
    await host.reload(retimed, plain)
    assert host.routes["a"].hedging is None
    host.installs = 0
    await host.reload(plain, old)
    assert host.routes["a"].hedging is not None
