"""xDS fed by discovery: clusters → `UpstreamSnapshot`s → `XdsServer.update`.

Does I/O (through `Discovery`, the health checkers and the ADS server). Two hosts:

- `sidecar xds -c FILE` (`XdsHost`): keeps its own clusters, one per upstream of
  the config, filled by SRV discovery (or static `endpoints`) and checked by the
  upstreams' active health checks; it makes no calls, so its breakers stay closed
  and health checks are what mark endpoints unhealthy.
- a running sidecar with `xds: {listen: ...}` (`XdsFeed` over the sidecar's own
  clusters): there breakers fed by real traffic count too.

Either way an endpoint is healthy in EDS exactly when the cluster would pick it
(`Host.healthy`: breaker closed and health check passing). A discovery change is
pushed at once (`XdsHost`); health and breaker changes have no event of their own,
so the snapshots are also rebuilt every `refresh_s`; `XdsServer.update` pushes only
when some resource really changed, so an idle mesh sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping

from sidecar.cluster import Cluster
from sidecar.config import Config
from sidecar.discovery.names import upstream_names
from sidecar.discovery.watcher import Discovery
from sidecar.endpoint import Endpoint, parse_hostport
from sidecar.health.checker import HealthCheckers
from sidecar.proxy.channels import ChannelPool
from sidecar.xds.resources import EndpointState, UpstreamSnapshot
from sidecar.xds.server import XdsServer

log = logging.getLogger(__name__)


def snapshots(config: Config, clusters: Mapping[str, Cluster]) -> dict[str, UpstreamSnapshot]:
    """Pure: what the clusters know now, as the xDS resources' input."""
    out = {}
    for name, cluster in clusters.items():
        up = config.upstreams[name]
        out[name] = UpstreamSnapshot(
            endpoints=tuple(EndpointState(h.endpoint, h.healthy) for h in cluster.hosts),
            sites=tuple(config.upstream_sites(name)),
            lb=up.lb,
            hash_key=up.hash_key,
            grpc_services=tuple(up.grpc_services),
            overprovisioning_factor=up.overprovisioning_factor,
        )
    return out


class XdsFeed:
    """Pushes the clusters' state to an ADS server: on `push()`, and every `refresh_s`."""

    def __init__(
        self,
        config: Config,
        clusters: Mapping[str, Cluster],
        server: XdsServer,
        refresh_s: float = 1.0,
    ) -> None:
        self.config = config
        self.clusters = clusters
        self.server = server
        self.refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None

    def push(self) -> bool:
        """Rebuild the snapshots and serve them; True when a resource changed."""
        changed = self.server.update(snapshots(self.config, self.clusters))
        if changed:
            log.info("xds: pushed versions %s", self.server.versions)
        return changed

    async def start(self) -> int:
        """Serve (the bound port) and keep the resources current."""
        self.push()
        port = await self.server.start()
        self._task = asyncio.get_running_loop().create_task(self._refresh())
        return port

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                self.push()
            except Exception:  # a bad snapshot must not end the feed
                log.exception("xds: rebuilding resources failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.server.stop()


def xds_feed(config: Config, clusters: Mapping[str, Cluster]) -> XdsFeed | None:
    """The feed a running sidecar serves when its config has `xds:` (sidecar/app.py)."""
    if config.xds is None:
        return None
    return XdsFeed(config, clusters, XdsServer(config.xds.listen), config.xds.refresh_s)


class XdsHost:
    """`sidecar xds`: discovery and health checks for every upstream, served over ADS."""

    def __init__(self, config: Config, listen: str, refresh_s: float = 1.0) -> None:
        self.config = config
        now = time.monotonic()
        self.clusters: dict[str, Cluster] = {}
        for name, up in config.upstreams.items():
            cluster = Cluster.from_config(name, up, config.upstream_sites(name), random.Random())
            if up.endpoints is not None:
                cluster.update(config.site, [_endpoint(a, config.site) for a in up.endpoints], now)
            self.clusters[name] = cluster
        self.feed = XdsFeed(config, self.clusters, XdsServer(listen), refresh_s)
        self.discovery: Discovery | None = None
        if upstream_names(config):
            self.discovery = Discovery(config, self._on_update)
        self.pool = ChannelPool(config.max_message_bytes)
        self.checkers = HealthCheckers(
            self.clusters, {n: up.health_check for n, up in config.upstreams.items()}, self.pool
        )

    def _on_update(self, upstream: str, site: str, endpoints: list[Endpoint], stale: bool) -> None:
        cluster = self.clusters.get(upstream)
        if cluster is None:
            return
        cluster.update(site, endpoints, time.monotonic())
        self.feed.push()

    @property
    def server(self) -> XdsServer:
        return self.feed.server

    async def start(self) -> int:
        if self.discovery is not None:
            await self.discovery.start()
            await self.discovery.wait_ready(2 * self.config.discovery.timeout_s)
        self.pool.start()
        self.checkers.start()
        return await self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        await self.checkers.close()
        await self.pool.close()


def _endpoint(address: str, site: str) -> Endpoint:
    host, port = parse_hostport(address)
    return Endpoint(host, port, site=site)
