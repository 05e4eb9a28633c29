"""The parts of a running sidecar (and of the in-process client) that apply config live.

Does I/O in `settle` and `abandon` only (discovery, health checks, listeners). Each
part follows the contract of sidecar/reload/reloader.py: `keys` it applies, a
`prepare` that builds without touching what runs, a `commit` that swaps without
awaiting, a `settle` that starts the new and stops the old.

- `UpstreamsPart` (`upstreams`, `discovery`): per upstream (diff.upstream_changes),
  the smallest rebuild that applies it, so unchanged upstreams keep their state:
  * unchanged: the same `Route` and `Cluster` (limits in use, retry budget,
    throttling history, breakers, latency EWMAs all kept);
  * static `endpoints` changed: the same cluster, diffed (`Cluster.update`: endpoints
    that stay keep their breaker and EWMA) and a new route (new limits and budget);
  * a key that shapes the cluster (diff.CLUSTER_KEYS): a new `Cluster` seeded with the
    endpoints the old one holds per site, so a discovered upstream is never empty while
    its new discovery waits for DNS; with unchanged `health_check` each endpoint keeps
    its health-check state (a sick one stays out); breakers and EWMAs start afresh;
  * any other key (timeouts, retries, limits, throttling, and keys added to an
    upstream's section later): a new `Route` from `Route.from_config` and
    `Policies.calls`, over the same cluster. A key added to `upstreams.<name>` is so
    applied with no change here, as long as its route is built from the section.
  Added upstreams get a new cluster and route, removed ones leave the router (calls
  already routed there finish). Discovery is rebuilt only when what it looks up
  changed (diff.discovery_changed): the old one is stopped, then the new one started,
  the clusters keeping their endpoints in between; health checks are rebuilt whenever
  a cluster is new.
  Calls in flight hold their old `Route` (and its cluster and policy objects) to the
  end; endpoints that left keep their pooled connection until it idles out
  (`outbound.channel_idle_timeout_s`), so no stream on it is cut.
- `FaultsPart` (`upstreams`, `inbound.faults`): a target whose configured faults
  changed gets the new ones in the fault table (a runtime `POST /faults` on it is
  replaced); other targets keep what is in force.
- `AdmissionPart` (`inbound.admission`): a new admission policy for new calls; calls
  admitted (or queued) by the old one release their tokens to it.
- `ListenersPart` (`outbound.listen`, `inbound.listen`): the new address is bound in
  `prepare` (a port in use refuses the reload), accepts from `settle`; the old socket
  stops accepting at the commit and its connections get GOAWAY and `drain_grace_s` to
  finish their calls (h2relay Plane.rebind).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sidecar.breaker.metrics import BreakerMetrics
from sidecar.cluster import Cluster
from sidecar.config import Config, ConfigError
from sidecar.discovery.membership import Membership
from sidecar.discovery.names import upstream_names
from sidecar.discovery.watcher import Discovery
from sidecar.endpoint import Endpoint, parse_hostport
from sidecar.faults import FaultTable
from sidecar.health.checker import HealthCheckers
from sidecar.mesh import Mesh, static_endpoint
from sidecar.policy import Policies
from sidecar.reload.diff import UpstreamChange, discovery_changed, upstream_changes
from sidecar.route import Route, Router

# What the host does with the new upstreams at the commit: swap its clusters, routes
# and router (and whatever reads them: metrics, the xDS feed, the planes' caches).
Install = Callable[[Config, dict[str, Cluster], dict[str, Route], Router], None]


def seeded_cluster(
    name: str, new: Config, old: Cluster | None, metrics: BreakerMetrics | None = None
) -> Cluster:
    """A cluster for `upstreams.<name>` of `new`: its static endpoints, or else the
    endpoints `old` holds in the sites it still spans (until discovery answers)."""
    up = new.upstreams[name]
    sites = new.upstream_sites(name)
    cluster = Cluster.from_config(name, up, sites, random.Random(), metrics)
    now = time.monotonic()
    if up.endpoints is not None:
        cluster.update(new.site, [static_endpoint(a, new.site) for a in up.endpoints], now)
    elif old is not None:
        for site in cluster.sites:
            held = [h.endpoint for h in old.hosts if h.endpoint.site == site]
            if held:
                cluster.update(site, held, now)
    if old is not None and old.health_check == cluster.health_check:
        # the same checks: an endpoint found sick stays sick until it passes again,
        # rather than taking calls as new until its next checks fail
        for host in cluster.hosts:
            before = old.host(host.endpoint.key)
            if before is not None and before.health is not None and host.health is not None:
                host.health = before.health  # (no pick has built a plan from the old yet)
    return cluster


@dataclass
class _UpstreamsChange:
    mesh: Mesh
    new: Config
    clusters: dict[str, Cluster]
    routes: dict[str, Route]
    router: Router
    install: Install
    static: dict[str, list[Endpoint]] = field(default_factory=dict)  # reused, re-diffed
    discovery: Discovery | None = None
    rediscover: bool = False
    checkers: HealthCheckers | None = None
    _old_discovery: Discovery | None = None
    _old_checkers: HealthCheckers | None = None

    def commit(self) -> None:
        now = time.monotonic()
        site = self.new.site
        for name, endpoints in self.static.items():
            cluster = self.clusters[name]
            cluster.update(site, endpoints, now)
            for other in cluster.sites:
                if other != site:
                    cluster.update(other, [], now)  # discovered before, static now
        membership = self.mesh.membership
        membership.clusters = self.clusters  # discovery's answers go to the new clusters
        if self.rediscover:
            self._old_discovery = membership.discovery
            membership.discovery = self.discovery
        if self.checkers is not None:
            self._old_checkers, self.mesh.checkers = self.mesh.checkers, self.checkers
        self.mesh.clusters = self.clusters
        self.mesh.config = self.new
        self.install(self.new, self.clusters, self.routes, self.router)

    async def settle(self) -> None:
        # the old one stops before the new one starts, so no answer to an old name can
        # land after a new one; meanwhile the clusters hold what they held (seeded)
        if self._old_discovery is not None:
            await self._old_discovery.stop()
        if self.rediscover and self.discovery is not None:
            await self.discovery.start()
        if self.checkers is not None:
            self.checkers.start()
        if self._old_checkers is not None:
            await self._old_checkers.close()

    async def abandon(self) -> None:
        return None  # nothing started before the commit


class UpstreamsPart:
    keys: tuple[str, ...] = ("upstreams", "discovery", "routes")

    def __init__(
        self,
        mesh: Mesh,
        policies: Policies,
        routes: Callable[[], Mapping[str, Route]],
        install: Install,
    ) -> None:
        self.mesh = mesh
        self.policies = policies
        self._routes = routes  # the routes in force now
        self.install = install

    async def prepare(self, old: Config, new: Config) -> _UpstreamsChange:
        changes = upstream_changes(old, new)
        mesh = self.mesh
        running = self._routes()
        clusters: dict[str, Cluster] = {}
        routes: dict[str, Route] = {}
        static: dict[str, list[Endpoint]] = {}
        for name, up in new.upstreams.items():
            change = changes.get(name, UpstreamChange(name, frozenset()))
            before = mesh.clusters.get(name)
            if before is None or change.cluster:
                breakers = mesh.metrics.breakers if mesh.metrics is not None else None
                cluster = seeded_cluster(name, new, before, breakers)
            else:
                cluster = before
                if "endpoints" in change.keys and up.endpoints is not None:
                    static[name] = [static_endpoint(a, new.site) for a in up.endpoints]
            clusters[name] = cluster
            route = running.get(name)
            if route is None or change.route or cluster is not before:
                policies = self.policies
                hedging = (
                    None if up.hedging_policy is None else policies.hedging(name, up.hedging_policy)
                )
                route = Route.from_config(name, up, cluster, policies.calls(name, up), hedging)
            routes[name] = route
        router = Router({n: u.grpc_services for n, u in new.upstreams.items()})
        plan = _UpstreamsChange(mesh, new, clusters, routes, router, self.install, static)
        if discovery_changed(old, new):
            plan.rediscover = True
            membership: Membership = mesh.membership
            counts = mesh.metrics.discovery if mesh.metrics is not None else None
            plan.discovery = (
                Discovery(new, membership.on_discovery, metrics=counts)
                if upstream_names(new)
                else None
            )
        if any(c.cluster or c.removed or "health_check" in c.keys for c in changes.values()):
            plan.checkers = HealthCheckers(
                clusters, {n: u.health_check for n, u in new.upstreams.items()}, mesh.pool
            )
        return plan


@dataclass
class _FaultsChange:
    table: FaultTable
    faults: dict[str, Any]  # target -> its new configured faults (None: none)
    targets: list[str]  # every target of the new config
    on_targets: Callable[[list[str]], None] | None

    def commit(self) -> None:
        for target, faults in self.faults.items():
            self.table.replace(target, faults)
        if self.on_targets is not None:
            self.on_targets(self.targets)

    async def settle(self) -> None:
        return None

    async def abandon(self) -> None:
        return None


def configured_faults(config: Config) -> dict[str, Any]:
    """The faults the config sets per target (`app`: the inbound listener's)."""
    out: dict[str, Any] = {n: up.faults for n, up in config.upstreams.items()}
    if config.inbound is not None:
        out["app"] = config.inbound.faults
    return out


class FaultsPart:
    keys: tuple[str, ...] = ("upstreams", "inbound.faults")

    def __init__(
        self, table: FaultTable, on_targets: Callable[[list[str]], None] | None = None
    ) -> None:
        self.table = table
        self.on_targets = on_targets  # told every target of the new config (/faults)

    async def prepare(self, old: Config, new: Config) -> _FaultsChange:
        before, after = configured_faults(old), configured_faults(new)
        changed = {
            t: after.get(t) for t in before.keys() | after.keys() if before.get(t) != after.get(t)
        }
        return _FaultsChange(self.table, changed, sorted(after), self.on_targets)


@dataclass
class _Swap:
    """A change that is one assignment at the commit."""

    apply: Callable[[], None]

    def commit(self) -> None:
        self.apply()

    async def settle(self) -> None:
        return None

    async def abandon(self) -> None:
        return None


class AdmissionPart:
    keys: tuple[str, ...] = ("inbound.admission",)

    def __init__(self, policies: Policies, plane: Callable[[], Any]) -> None:
        self.policies = policies
        self._plane = plane  # the inbound Plane, or None

    async def prepare(self, old: Config, new: Config) -> _Swap:
        assert new.inbound is not None  # `inbound` itself turning on or off is restart-only
        admission = self.policies.admission(new.inbound.admission)
        plane = self._plane()

        def apply() -> None:
            if plane is not None:
                plane.set_admission(admission)

        return _Swap(apply)


@dataclass
class _Rebind:
    plane: Any
    server: Any
    grace_s: float
    port: int
    on_port: Callable[[int], None]
    _old: Any = None

    def commit(self) -> None:
        self._old = self.plane.swap_server(self.server)
        self.on_port(self.port)

    async def settle(self) -> None:
        await self.server.start_serving()
        self.plane.drain_old(self._old, self.grace_s)

    async def abandon(self) -> None:
        self.server.close()


class ListenersPart:
    keys: tuple[str, ...] = ("outbound.listen", "inbound.listen")

    def __init__(
        self, planes: Callable[[], Mapping[str, Any]], on_port: Callable[[str, int], None]
    ) -> None:
        self._planes = planes  # "outbound"/"inbound" -> its Plane
        self.on_port = on_port

    async def prepare(self, old: Config, new: Config) -> _Many:
        changes: list[_Rebind] = []
        planes = self._planes()
        try:
            for name in ("outbound", "inbound"):
                before, after = getattr(old, name), getattr(new, name)
                if before is None or after is None or before.listen == after.listen:
                    continue
                plane = planes.get(name)
                if plane is None:
                    continue
                key = f"{name}.listen"
                try:
                    server, port = await plane.bind(*parse_hostport(after.listen))
                except OSError as exc:
                    raise ConfigError(
                        key, f"cannot listen on {after.listen}: {exc.strerror}"
                    ) from None
                changes.append(
                    _Rebind(plane, server, new.drain_grace_s, port, partial(self.on_port, name))
                )
        except ConfigError:
            for c in changes:
                await c.abandon()
            raise
        return _Many(changes)


@dataclass
class _Many:
    changes: list[Any]

    def commit(self) -> None:
        for c in self.changes:
            c.commit()

    async def settle(self) -> None:
        for c in self.changes:
            await c.settle()

    async def abandon(self) -> None:
        for c in self.changes:
            await c.abandon()
