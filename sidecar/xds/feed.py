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
from collections.abc import Mapping

from sidecar.cluster import Cluster
from sidecar.config import Config
from sidecar.h2relay.pool import Pool
from sidecar.mesh import Mesh
from sidecar.tls.identity import IdPattern
from sidecar.tls.runtime import MeshTls
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
            peer_id_regexes=_peer_ids(config, name),
        )
    return out


def _peer_ids(config: Config, name: str) -> tuple[str, ...] | None:
    """With mTLS to this upstream: the SPIFFE IDs its endpoints may present, as RE2."""
    up = config.upstreams[name]
    if config.tls is None or not up.tls:
        return None
    texts = up.identities if up.identities is not None else [name]
    return tuple(IdPattern.parse(t, config.domain).regex() for t in texts)


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
    server = XdsServer(config.xds.listen, rules=config.routes)
    return XdsFeed(config, clusters, server, config.xds.refresh_s)


class XdsHost:
    """`sidecar xds`: discovery and health checks for every upstream, served over ADS."""

    def __init__(self, config: Config, listen: str, refresh_s: float = 1.0) -> None:
        self.config = config
        # with `tls`, the health checks reach peers' inbound listeners over mTLS, as a
        # sidecar's do (this host's identity: the config's service)
        self.tls = MeshTls(config) if config.tls is not None else None
        self.pool = Pool(tls=self.tls)  # the health checks' connections
        # a discovery change is pushed at once (health and breakers every refresh_s)
        self.mesh = Mesh(config, self.pool, on_update=self._changed)
        self.clusters = self.mesh.clusters
        self.feed = XdsFeed(
            config, self.clusters, XdsServer(listen, rules=config.routes), refresh_s
        )

    def _changed(self) -> None:
        self.feed.push()

    @property
    def server(self) -> XdsServer:
        return self.feed.server

    async def start(self) -> int:
        self.pool.start()
        if self.tls is not None:
            self.tls.start()
        await self.mesh.start(wait_s=2 * self.config.discovery.timeout_s)
        return await self.feed.start()

    async def stop(self) -> None:
        await self.feed.stop()
        await self.mesh.stop()
        if self.tls is not None:
            self.tls.stop()
        await self.pool.close()
