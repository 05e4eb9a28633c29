"""The upstreams of one process, built once from the config: a cluster per upstream,
discovery (and registration) feeding them, active health checks of their endpoints.

Does I/O through `Membership` (DNS) and the health checkers (the pool they are handed).
Three hosts build their upstreams here and nowhere else: the sidecar (sidecar/app.py),
the in-process client (sidecar/client/), and `sidecar xds` (sidecar/xds/feed.py), so a
cluster means the same in each: the same sites and SRV priorities, balancer, breakers,
static `endpoints` in the config's own site, discovery for the rest.

What a host decides, and passes in: whether this process registers itself (only a
sidecar with an inbound listener does; the client and `sidecar xds` only look peers up),
how to read the local app's health (for registration), what to do after each discovery
change (the xDS host pushes new resources at once), and the pool the health checks ride
(the data plane's, so a check tests the connection calls use).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

from sidecar.cluster import Cluster
from sidecar.config import Config, RouteConfig
from sidecar.discovery.membership import Membership
from sidecar.endpoint import Endpoint, parse_hostport
from sidecar.h2relay.mirror import Mirror
from sidecar.h2relay.pool import Pool
from sidecar.health.checker import HealthCheckers
from sidecar.metrics import Metrics
from sidecar.policy import Policies
from sidecar.ratelimit import UpstreamLimit
from sidecar.route import Route
from sidecar.route_rules import RuleRouter, WeightedSplit, build_rules


def static_endpoint(address: str, site: str) -> Endpoint:
    """An endpoint written in the config (`host:port`), in the given site."""
    host, port = parse_hostport(address)
    return Endpoint(host, port, site=site)


def build_clusters(
    config: Config, rng: random.Random | None = None, metrics: Metrics | None = None
) -> dict[str, Cluster]:
    """One cluster per upstream; static `endpoints` are in the config's own site."""
    breaker_metrics = metrics.breakers if metrics is not None else None
    now = time.monotonic()
    clusters: dict[str, Cluster] = {}
    for name, up in config.upstreams.items():
        cluster = Cluster.from_config(
            name, up, config.upstream_sites(name), rng or random.Random(), breaker_metrics
        )
        if up.endpoints is not None:  # static; otherwise discovery fills it
            cluster.update(
                config.site, [static_endpoint(a, config.site) for a in up.endpoints], now
            )
        clusters[name] = cluster
    return clusters


class Mesh:
    """A process's upstreams: clusters, their discovery and their health checks."""

    def __init__(
        self,
        config: Config,
        health_pool: Pool,
        *,
        register: bool = False,
        app_healthy: Callable[[], bool] = lambda: False,
        on_update: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not register and config.registration is not None:
            config = config.model_copy(update={"registration": None})
        self.config = config
        self.pool = health_pool
        self.metrics = metrics
        self.clusters = build_clusters(config, rng, metrics)
        self.membership = Membership(
            config,
            self.clusters,
            app_healthy,
            on_update,
            metrics.discovery if metrics is not None else None,
        )
        self.checkers = HealthCheckers(
            self.clusters,
            {n: up.health_check for n, up in config.upstreams.items()},
            health_pool,
        )

    def routes(self, policies: Policies) -> dict[str, Route]:
        """The route to each upstream, with that upstream's call policy, rate limit and
        hedging policy."""
        now = time.monotonic()
        routes: dict[str, Route] = {}
        for name, up in self.config.upstreams.items():
            hedging = (
                None if up.hedging_policy is None else policies.hedging(name, up.hedging_policy)
            )
            route = Route.from_config(
                name, up, self.clusters[name], policies.calls(name, up), hedging
            )
            if up.rate_limit is not None:
                route.rate_limit = UpstreamLimit(name, up.rate_limit, now)
            routes[name] = route
        return routes

    def rule_router(
        self,
        policies: Policies,
        routes: dict[str, Route],
        fallback: Callable[[str, str | None], Route | None],
        rng: random.Random | None = None,
    ) -> RuleRouter | None:
        """The config's `routes` in front of `fallback` (grpc_services / :authority);
        None when there are none. Each entry's Routes are its upstreams' (`routes`: the
        same limits, rate limit and cluster) with the entry's own timeouts and retries."""
        config = self.config
        if not config.routes:
            return None
        rng = rng or random.Random()

        def target(index: int, spec: RouteConfig) -> Route:
            mirror = None
            if spec.mirror is not None:
                shadow = spec.mirror.upstream
                counter = None if self.metrics is None else self.metrics.plane.mirror_calls
                mirror = Mirror(shadow, self.clusters[shadow], spec.mirror, rng, counter)
            backends = []
            for name in spec.targets:
                base = routes[name]
                calls = None
                if spec.retries is not None or spec.hedging_policy is not None:
                    # (a route's hedging replaces the upstream's retries: retries None)
                    up = config.upstreams[name].model_copy(update={"retries": spec.retries})
                    calls = policies.route_calls(base.calls, name, up)
                backend = base.for_rule(spec, calls)
                if spec.hedging_policy is not None:
                    hedging = policies.hedging(name, spec.hedging_policy)
                    backend = dataclasses.replace(backend, hedging=hedging)
                elif spec.retries is not None and backend.hedging is not None:
                    # the route's retries replace the upstream's hedging (never both)
                    backend = dataclasses.replace(backend, hedging=None)
                if mirror is not None:
                    backend = dataclasses.replace(backend, mirror=mirror)
                backends.append(backend)
            if spec.split is None:
                return backends[0]
            weights = [part.weight for part in spec.split]
            return Route.splitting(backends, WeightedSplit(backends, weights, spec.hash_on))

        return RuleRouter(build_rules(config.routes, target), fallback)

    async def start(self, wait_s: float | None = None) -> None:
        """Start discovery and health checks; with `wait_s`, wait (bounded) for the first
        DNS answers, so the first calls find endpoints."""
        self.checkers.start()
        await self.membership.start()
        discovery = self.membership.discovery
        if wait_s is not None and discovery is not None:
            await discovery.wait_ready(wait_s)

    async def stop(self) -> None:
        await self.membership.stop()
        await self.checkers.close()

    def snapshot(self, now: float) -> dict[str, Any]:
        """What `/clusters` shows: every cluster with its discovery state per site."""
        return self.membership.clusters_snapshot(now)

    def __repr__(self) -> str:
        return f"Mesh({', '.join(repr(c) for c in self.clusters.values())})"
