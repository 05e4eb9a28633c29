"""This sidecar's part in the mesh: discovered peers in, its own record out.

Does I/O (through `Discovery` and `Registrar`). sidecar/mesh.py hands over the
clusters and a way to read the local app's health; the sidecar (sidecar/app.py) calls
`start`, `leave`, `linger` and `stop` at the right moments:

- Discovery watches every upstream without static `endpoints`, per site, local
  site first (`config.upstream_sites`), and each whole per-site set goes to
  `Cluster.update`, which diffs it, so unchanged endpoints keep their channels,
  breakers and latency history.
- The discovery state per (upstream, site) (SRV name, stale flag, last error,
  last refresh) is merged into `/clusters` beside the cluster's own snapshot, and
  endpoints held from a stale answer are marked there.
- Registration, when configured: the instance's SRV record is published once the
  local app answers its health check (and never while draining), renewed before
  its TTL lapses, and removed on drain or SIGTERM.

Why `leave()` comes before the listeners stop, and why `linger()` exists:
callers learn that we left only at their next lookup, up to one TTL later (plus
their `empty_grace_s` when we were the last instance of the name). Until then
they still send us calls; if our listeners were already closed, each of those
calls would be a connect failure the caller has to retry or lose. So on drain
we deregister first, keep serving for `registration.linger_s`, and only then
close (the same order Kubernetes users get from a preStop sleep).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from sidecar.admin import AdminServer
from sidecar.cluster import Cluster
from sidecar.config import Config
from sidecar.discovery.metrics import DiscoveryMetrics
from sidecar.discovery.names import upstream_names
from sidecar.discovery.registrar import Registrar
from sidecar.discovery.watcher import Discovery
from sidecar.endpoint import Endpoint

log = logging.getLogger("sidecar.discovery")


class Membership:
    """Discovery feeding the clusters, and registration of this instance."""

    def __init__(
        self,
        config: Config,
        clusters: Mapping[str, Cluster],
        app_healthy: Callable[[], bool],
        on_update: Callable[[], None] | None = None,
        metrics: DiscoveryMetrics | None = None,
    ) -> None:
        self.config = config
        self.clusters = clusters
        self._app_healthy = app_healthy
        self._on_change = on_update  # told after each discovery change reached a cluster
        self.draining = False
        self.discovery: Discovery | None = None
        if upstream_names(config):
            self.discovery = Discovery(config, self.on_discovery, metrics=metrics)
        self.registrar: Registrar | None = None
        self.linger_s = 0.0
        if config.registration is not None:
            self.registrar = Registrar(config, metrics)
            reg = config.registration
            self.linger_s = float(reg.ttl_s) if reg.linger_s is None else reg.linger_s
        self._left_at: float | None = None

    async def start(self) -> None:
        """Start watching names and, when configured, registering (returns at once)."""
        if self.discovery is not None:
            await self.discovery.start()
        if self.registrar is not None:
            inst = self.registrar.instance
            log.info(
                "registration: will publish %s -> %s (%s:%d) once the app is healthy",
                inst.srv_name,
                inst.srv_rdata,
                inst.address,
                inst.port,
            )
            self.registrar.start(self._may_register)

    def _may_register(self) -> bool:
        return not self.draining and self._app_healthy()

    def on_discovery(
        self, upstream: str, site: str, endpoints: list[Endpoint], stale: bool
    ) -> None:
        cluster = self.clusters.get(upstream)
        if cluster is None:
            return
        before = {h.endpoint.key for h in cluster.hosts if h.endpoint.site == site}
        cluster.update(site, endpoints, time.monotonic())
        after = {ep.key for ep in endpoints}
        added, removed = len(after - before), len(before - after)
        log.info(
            "discovery: %s in %s has %d endpoints (+%d -%d)%s",
            upstream,
            site,
            len(after),
            added,
            removed,
            " [stale: kept through DNS errors]" if stale else "",
        )
        if self._on_change is not None:
            self._on_change()

    async def leave(self) -> None:
        """Drain starts: deregister now (bounded by the registration timeout)."""
        self.draining = True
        if self.registrar is None or self._left_at is not None:
            return
        was_registered = self.registrar.registered
        await self.registrar.stop()  # stops renewing; removes the record if held
        if was_registered:
            self._left_at = time.monotonic()
            if self.registrar.registered:
                log.warning("registration: deregister failed: %s", self.registrar.last_error)
            else:
                log.info(
                    "registration: removed %s; still serving %.1fs so callers let go",
                    self.registrar.instance.srv_name,
                    self.linger_s,
                )

    async def linger(self) -> None:
        """Wait out the rest of `linger_s` since `leave()` (nothing if never registered)."""
        if self._left_at is None:
            return
        remaining = self._left_at + self.linger_s - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def stop(self) -> None:
        if self.registrar is not None:
            await self.registrar.stop()
        if self.discovery is not None:
            await self.discovery.stop()

    # -- what /clusters shows ---------------------------------------------------------

    def discovery_state(self) -> dict[str, list[dict[str, Any]]]:
        """Per upstream, one entry per site: SRV name, stale, last error, last refresh."""
        out: dict[str, list[dict[str, Any]]] = {}
        if self.discovery is None:
            return out
        for entry in self.discovery.snapshot():
            out.setdefault(entry["upstream"], []).append(
                {k: v for k, v in entry.items() if k != "upstream"}
            )
        return out

    def clusters_snapshot(self, now: float) -> dict[str, Any]:
        """Every cluster's snapshot, with its discovery state per site merged in."""
        state = self.discovery_state()
        out: dict[str, Any] = {}
        for name, cluster in self.clusters.items():
            snap = cluster.snapshot(now)
            sites = state.get(name)
            snap["discovery"] = sites  # None: static endpoints
            stale_sites = {s["site"] for s in sites or () if s["stale"]}
            for ep in snap["endpoints"]:
                ep["stale"] = ep["site"] in stale_sites
            out[name] = snap
        return out

    def registration_state(self) -> dict[str, Any]:
        """What `GET /registration` shows: our record and whether DNS holds it."""
        if self.registrar is None:
            return {"configured": False}
        inst = self.registrar.instance
        return {
            "configured": True,
            "srv_name": inst.srv_name,
            "record": inst.srv_rdata,
            "address": inst.address,
            "registered": self.registrar.registered,
            "last_error": self.registrar.last_error,
            "draining": self.draining,
        }

    def add_admin_routes(self, admin: AdminServer) -> None:
        """`GET /registration` on the admin server."""

        async def registration(request: web.Request) -> web.Response:
            return web.json_response(self.registration_state())

        admin.add_route("GET", "/registration", registration)
