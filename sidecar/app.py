"""The composition root: builds a running sidecar from a Config, and takes it down.

Does I/O (listeners, admin, signals). Nothing here decides anything: policies live in
their packages and plug in through `Policies` (sidecar/policy.py). Discovery and
registration live in `Membership` (sidecar/discovery/membership.py): discovery feeds
`cluster.update(...)`; registration publishes this instance while its app is healthy.

Shutdown order, and why: health turns NOT_SERVING and our SRV record is removed first
so peers stop choosing us; we keep serving for `registration.linger_s` while their DNS
caches let go; then the inbound listener stops accepting and finishes its in-flight calls within
`drain_grace_s`; only then the outbound one, because the app may still call out while
finishing those inbound calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar.admin import AdminServer
from sidecar.admin.faults import FaultAdmin, with_faults
from sidecar.admin.state_metrics import StateCollector
from sidecar.cluster import Cluster
from sidecar.config import Config, ConfigError, redacted
from sidecar.faults import FaultTable
from sidecar.h2relay.connection import Settings
from sidecar.h2relay.listeners import RelayDataPlane
from sidecar.h2relay.pool import Pool
from sidecar.health.app_checker import AppChecker
from sidecar.health.service import InboundHealth
from sidecar.logs import configure as configure_logs
from sidecar.mesh import Mesh, static_endpoint
from sidecar.metrics import Metrics
from sidecar.policy import Policies
from sidecar.policy_adapters import default_policies
from sidecar.ratelimit import InboundLimits
from sidecar.reload import Reloader, ReloadResult
from sidecar.reload.parts import AdmissionPart, FaultsPart, ListenersPart, UpstreamsPart
from sidecar.route import Route, Router
from sidecar.tls.runtime import MeshTls
from sidecar.xds.feed import xds_feed

log = logging.getLogger("sidecar")


class Sidecar:
    def __init__(
        self,
        config: Config,
        policies: Policies | None = None,
        registry: CollectorRegistry | None = None,
        *,
        load: Callable[[], Config] | None = None,
    ) -> None:
        """`load` reads and checks the config file again (SIGHUP, POST /reload)."""
        self.config = config
        # this sidecar's metrics, on a registry of its own (what its /metrics serves):
        # every part that counts is handed its share here
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.state_metrics = StateCollector()  # endpoint states and budgets, read at scrape
        self.registry.register(self.state_metrics)
        policies = self.policies = policies or default_policies(self.metrics)
        # The pooled HTTP/2 connections to endpoints: the relay's calls and the active
        # health checks ride them both (one connection per endpoint, not two)
        idle_s = config.outbound.channel_idle_timeout_s if config.outbound else 300.0
        # mTLS between sidecars (None without `tls`): the certificate store, watched; the
        # pool's connections to peers and the inbound listener use it
        self.tls = MeshTls(config, self.metrics.tls) if config.tls is not None else None
        self.pool = Pool(Settings(), idle_s, tls=self.tls)
        # Discovery fills the clusters without static endpoints; registration publishes us.
        self.mesh = Mesh(
            config,
            self.pool,
            register=True,
            app_healthy=lambda: bool(self.checker and self.checker.healthy),
            metrics=self.metrics,
        )
        self.clusters = self.mesh.clusters
        self.routes = self.mesh.routes(policies)
        self.router = Router({n: up.grpc_services for n, up in config.upstreams.items()})
        # `routes` (method and header rules, splits, mirrors) before grpc_services
        self.rules = self.mesh.rule_router(policies, self.routes, self._service_route)
        # faults in force per upstream ("app": the inbound listener's calls to the app)
        self.fault_table = FaultTable(
            {
                **{n: up.faults for n, up in config.upstreams.items()},
                "app": config.inbound.faults if config.inbound is not None else None,
            }
        )
        faults = policies.faults(self.fault_table)
        admission = policies.admission(config.inbound.admission) if config.inbound else None
        self.ports: dict[str, int] = {}
        self.health = InboundHealth(n for n in (config.service, _app_service(config)) if n)
        self.checker: AppChecker | None = None
        self.app_route: Route | None = None
        if config.inbound is not None:
            now = time.monotonic()
            app = Cluster("app", sites=(config.site,), breaker=None)  # one endpoint: no ejecting
            app.update(config.site, [static_endpoint(config.inbound.app, config.site)], now)
            self.app_route = Route("app", app, None)
            if config.inbound.rate_limits:
                self.app_route.rate_limit = InboundLimits(config.inbound.rate_limits, now)
            self.checker = AppChecker(config.inbound.health, config.inbound.app)
        self.relay = RelayDataPlane(
            config,
            self.outbound_route,
            self.app_route,
            self.health,
            admission,
            faults,
            self.pool,
            self.metrics,
            self.tls,
        )
        self.admin = AdminServer(
            config.admin.listen,
            ready=self.not_ready_reasons,
            clusters=lambda: self.mesh.snapshot(time.monotonic()),
            config_dump=self._config_dump,
            drain=self.drain,
            registry=self.registry,
            token=config.admin.token,
        )
        self.mesh.membership.add_admin_routes(self.admin)
        if self.tls is not None:
            self.tls.add_admin_routes(self.admin)  # GET /tls: identity and expiry
        targets = [*config.upstreams, *(["app"] if config.inbound is not None else [])]
        fault_admin = FaultAdmin(self.fault_table, targets)
        fault_admin.add_to(self.admin)
        self.draining = False
        self.started = False
        self._drain_task: asyncio.Task[None] | None = None
        self.xds = xds_feed(config, self.clusters)  # None unless `xds:` is configured
        # Hot reload (sidecar/reload/): each part applies the keys it names; a changed
        # key no part names is refused as restart-only. A new reloadable section adds
        # its part here (the contract: sidecar/reload/reloader.py).
        self.reloader = Reloader(
            config,
            [
                UpstreamsPart(self.mesh, policies, lambda: self.routes, self._install),
                FaultsPart(self.fault_table, lambda t: setattr(fault_admin, "targets", t)),
                AdmissionPart(policies, lambda: self.relay.planes.get("inbound")),
                ListenersPart(lambda: self.relay.planes, self.ports.__setitem__),
                _ReadLive(("drain_grace_s",)),
            ],
            load,
            self.metrics.reload,
        )
        self.reloader.on_applied.append(self._applied)
        self.admin.add_route("POST", "/reload", self._reload_handler)
        # in a `--workers` worker: asks the supervisor to reload every worker (workers.py)
        self.reload_all: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None

    def _install(
        self, config: Config, clusters: dict[str, Cluster], routes: dict[str, Route], router: Router
    ) -> None:
        """A reload's new upstreams: calls routed from now on take these (no await)."""
        self.clusters = clusters
        self.routes = routes
        self.router = router
        # the `routes` rules over the new upstreams' routes (mesh.config is the new one)
        self.rules = self.mesh.rule_router(self.policies, routes, self._service_route)
        self.relay.routes_changed(config)  # cached route lookups, the replay buffer
        self.state_metrics.watch(self, config.service or "", config.site, clusters, routes)
        if self.xds is not None:
            self.xds.config = config
            self.xds.clusters = clusters

    def _applied(self, config: Config) -> None:
        self.config = config
        self.relay.config = config

    async def reload(self) -> ReloadResult:
        """Read the config file again and apply it (SIGHUP, POST /reload). Not before
        `start` has run (the parts start and stop what runs) nor once draining began
        (a rebound listener would accept calls again)."""
        if not self.started or self.draining:
            why = "the sidecar is draining" if self.draining else "the sidecar is still starting"
            return await self.reloader.refuse(ConfigError("", f"{why}: nothing reloaded"))
        return await self.reloader.reload()

    async def _reload_handler(self, request: web.Request) -> web.Response:
        if self.reload_all is not None:  # a worker: every worker reloads (workers.py)
            try:
                results = await self.reload_all()
            except (OSError, TimeoutError) as exc:
                return web.json_response({"error": f"the supervisor did not answer: {exc}"},
                                         status=503)  # fmt: skip
            ok = all(r.get("result") in ("applied", "unchanged") for r in results)
            return web.json_response({"workers": results}, status=200 if ok else 400)
        result = await self.reload()
        return web.json_response(result.as_dict(), status=200 if result.ok else 400)

    def _config_dump(self) -> dict[str, Any]:
        dump = with_faults(redacted(self.config), self.fault_table)
        return {"version": self.reloader.version.as_dict(), **dump}

    def outbound_route(self, method: str, authority: str | None = None) -> Any:
        """A Route, a route_rules.HeaderRoutes (the request's headers choose), or None."""
        if self.rules is not None:
            return self.rules.resolve(method, authority)
        return self._service_route(method, authority)

    def _service_route(self, method: str, authority: str | None = None) -> Route | None:
        name = self.router.route(method, authority)
        return None if name is None else self.routes[name]

    async def start(self) -> None:
        if self.tls is not None:
            self.tls.start()  # the files are watched from now on
        self.ports.update(await self.relay.start())
        if self.checker is not None:
            self.checker.on_change(self._app_health_changed)
            self.metrics.process.app_healthy.set(1 if self.checker.healthy else 0)
            self.checker.start()
        self.pool.start()
        # endpoint states, per-site attempts, retry budgets: read at scrape time
        self.state_metrics.watch(
            self, self.config.service or "", self.config.site, self.clusters, self.routes
        )
        self.ports["admin"] = await self.admin.start()
        await self.mesh.start()
        if self.xds is not None:
            self.ports["xds"] = await self.xds.start()
        self.started = True
        log.info("sidecar listening %s", " ".join(f"{k}={v}" for k, v in self.ports.items()))

    def _app_health_changed(self, healthy: bool) -> None:
        self.metrics.process.app_healthy.set(1 if healthy else 0)
        self.health.update(app_healthy=healthy)

    def not_ready_reasons(self) -> list[str]:
        self.metrics.process.channels_open.set(len(self.pool))
        reasons = [
            f"upstream {n} has no endpoints" for n, c in self.clusters.items() if not c.hosts
        ]
        if self.checker is not None and not self.checker.healthy:
            reasons.append(f"local app at {self.checker.address} is not serving")
        if self.draining:
            reasons.append("draining")
        return reasons

    async def drain(self) -> None:
        """NOT_SERVING now; stop accepting calls after `drain_grace_s` (POST /drain)."""
        if self.draining:
            return
        await self._start_draining()

        async def later() -> None:
            await self.mesh.membership.linger()
            await asyncio.sleep(self.config.drain_grace_s)
            await self._stop_listeners()

        self._drain_task = _spawn(later())

    async def _start_draining(self) -> None:
        self.draining = True
        self.metrics.process.draining.set(1)
        self.health.update(draining=True)
        log.info("draining")
        await (
            self.mesh.membership.leave()
        )  # deregister before the listeners stop (see membership.py)

    async def _stop_listeners(self) -> None:
        await self.relay.stop(self.config.drain_grace_s)

    async def stop(self) -> None:
        """Graceful stop (SIGTERM): drain, finish in-flight calls within the grace, close."""
        if not self.draining:
            await self._start_draining()
        if self._drain_task is not None:
            self._drain_task.cancel()
        await self.mesh.membership.linger()
        await self._stop_listeners()
        await self.mesh.stop()
        if self.xds is not None:
            await self.xds.stop()
        if self.checker is not None:
            await self.checker.close()
        await self.admin.close()
        self.state_metrics.unwatch(self)
        if self.tls is not None:
            self.tls.stop()
        await self.pool.close()


def _app_service(config: Config) -> str:
    return config.inbound.health.service if config.inbound is not None else ""


_background: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)  # keep a reference until done (asyncio holds only weak ones)
    task.add_done_callback(_background.discard)
    return task


class _ReadLive:
    """Keys the sidecar reads from its running config each time it needs them: the new
    value applies by the config being swapped (`Sidecar._applied`)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    async def prepare(self, old: Config, new: Config) -> _Nothing:
        return _Nothing()


class _Nothing:
    def commit(self) -> None:
        return None

    async def settle(self) -> None:
        return None

    async def abandon(self) -> None:
        return None


async def serve(
    config: Config,
    load: Callable[[], Config] | None = None,
    control: Callable[[Sidecar], Any] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT, then stop gracefully; the process exit code. SIGHUP
    reloads the config through `load`; `control` (a worker's channel to its supervisor,
    sidecar/workers.py) is started with the running sidecar."""
    sidecar = Sidecar(config, load=load)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _spawn(sidecar.reload()))
    if control is not None:
        _spawn(control(sidecar))
    await sidecar.start()
    await stop.wait()
    log.info("signal received: stopping (grace %.1fs)", config.drain_grace_s)
    with contextlib.suppress(asyncio.CancelledError):
        await sidecar.stop()
    return 0


def run(
    config: Config,
    load: Callable[[], Config] | None = None,
    control: Callable[[Sidecar], Any] | None = None,
) -> int:
    """Run the sidecar on uvloop when available (`serve` says what `load` and `control` do)."""
    configure_logs(config.log)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(config, load, control))
