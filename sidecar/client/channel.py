"""The in-process client's channel: one upstream's whole outbound side inside the app.

Does I/O (discovery, health checks, the relay's pooled connections to endpoints). What
a sidecar's outbound listener does for a call, minus the hop: the same `Cluster`
(sites, SRV priorities, balancer, breakers), SRV discovery and active health checks,
all built by `Mesh` (sidecar/mesh.py) as for the sidecar, and the same relay `Plane`
(sidecar/h2relay: deadline, limits, throttling, faults, retries within the budget,
per-try timeouts, metrics) over the same kind of `Pool` of HTTP/2 connections, built
as sidecar/h2relay/listeners.py builds the outbound listener's. Instead of listening
on a socket the plane serves one in-memory connection from the app
(sidecar/client/link.py); the caller's side turns a stub's call into a gRPC stream on
it and back (sidecar/client/call.py).

What a proxy hop does and this cannot: route by `:path` (a channel is one upstream,
as a stub is one service), strip the caller's hop-by-hop headers (there is no hop),
or shed inbound load (that is the callee's sidecar's job, unchanged).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Mapping
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry

from sidecar.client import call as calls
from sidecar.client.call import (
    Deserializer,
    RequestStream,
    Serializer,
    StreamStreamCall,
    StreamUnaryCall,
    UnaryResponseCall,
    UnaryStreamCall,
    _pairs,
)
from sidecar.client.link import Link
from sidecar.config import Admin, Config, ConfigError, Http2, LogConfig, load_config, parse_config
from sidecar.faults import FaultTable
from sidecar.h2relay.call import Call
from sidecar.h2relay.connection import Settings
from sidecar.h2relay.listeners import retry_buffer
from sidecar.h2relay.plane import Plane
from sidecar.h2relay.pool import Pool
from sidecar.mesh import Mesh
from sidecar.metrics import Metrics
from sidecar.policy import Policies
from sidecar.policy_adapters import default_policies
from sidecar.reload import Reloader, ReloadResult
from sidecar.reload.parts import FaultsPart, UpstreamsPart
from sidecar.route import Route, Router
from sidecar.tls.runtime import MeshTls
from sidecar.tracing import make_tracer

Source = Config | str | os.PathLike[str] | Mapping[str, Any]


def client_view(name: str, config: Config) -> Config:
    """What of `config` an in-process channel to upstream `name` uses: that upstream and
    those its `routes` send or mirror to, discovery, sites, message and idle limits. The keys of listeners, admin, logs and
    registration are the app's sidecar's business, so the channel's reload ignores them."""
    up = config.upstreams.get(name)
    if up is None:
        raise ConfigError(f"upstreams.{name}", "no such upstream in the config")
    outbound = config.outbound
    if outbound is not None:
        outbound = outbound.model_copy(update={"listen": "127.0.0.1:15001", "http2": Http2()})
    names = {name} | {
        n
        for r in config.routes
        for n in (*r.targets, *([r.mirror.upstream] if r.mirror is not None else []))
    }
    return config.model_copy(
        update={
            "upstreams": {n: u for n, u in config.upstreams.items() if n in names},
            "service": None,
            "inbound": None,
            "outbound": outbound,
            "admin": Admin(),
            "drain_grace_s": 10.0,
            "registration": None,
            "xds": None,
            "access_log": None,
            "log": LogConfig(),
        }
    )


class ClientUpstream:
    """Everything one upstream needs, built from its config section as sidecar/app.py
    builds it (one implementation, two hosts). Made inside the running event loop."""

    def __init__(
        self,
        name: str,
        config: Config,
        *,
        policies: Policies | None = None,
        direction: str = "outbound",
        rng: random.Random | None = None,
        registry: CollectorRegistry | None = None,
        source: Source | None = None,
    ) -> None:
        """`source`: where `reload()` reads the config again (a path; None: no reload
        without a config handed to it)."""
        # the app's registry (prometheus_client's default unless told): the client's
        # series sit beside the app's own, one set per registry however many channels
        self.metrics = Metrics.on(registry if registry is not None else REGISTRY)
        policies = policies or default_policies(self.metrics)
        self.name = name
        # discovery for this upstream, and those the config's `routes` send to or mirror
        # to (a channel follows the same routes as the sidecar's outbound listener, with
        # this upstream where the sidecar falls back to grpc_services: client_view);
        # never registration (the app's sidecar, if any, registers the app)
        self.config = client_view(name, config)
        ups = self.config.upstreams
        idle_s = config.outbound.channel_idle_timeout_s if config.outbound else 300.0
        settings = Settings()
        # with `tls`: the app's own identity (the whole config's service: client_view
        # drops it), its files watched, as a sidecar's (sidecar/tls/runtime.py); the
        # endpoints are peers' inbound listeners
        self.tls = MeshTls(config, self.metrics.tls) if config.tls is not None else None
        # connections to the endpoints (calls, checks)
        self.pool = Pool(settings, idle_s, tls=self.tls)
        self.mesh = Mesh(self.config, self.pool, rng=rng, metrics=self.metrics)
        self.cluster = self.mesh.clusters[name]
        self.routes = self.mesh.routes(policies)
        self.route = self.routes[name]
        self.fault_table = FaultTable({n: u.faults for n, u in ups.items()})
        self._policies = policies
        self._rng = rng
        self.rules = self.mesh.rule_router(policies, self.routes, self._to_upstream, rng)
        # spans of the app's calls, exported from the app's process (None: tracing off);
        # from the app's config as given: its `service` names the spans' resource
        self.tracer = make_tracer(config, self.metrics.tracing)

        def resolve(method: str, authority: str | None) -> Any:
            rules = self.rules  # rebuilt by a reload
            return self.route if rules is None else rules.resolve(method, authority)

        self.plane = Plane(
            direction,
            resolve,
            self.pool,
            new_call=Call,
            max_message_bytes=config.max_message_bytes,
            faults=policies.faults(self.fault_table),
            settings=settings,
            retry_buffer=retry_buffer(self.config),
            metrics=self.metrics.plane,
            tracer=self.tracer,
        )
        self.link = Link(self.plane, name, config.max_message_bytes)
        self.source = source
        # Hot reload of this upstream's section (sidecar/reload/, as the sidecar's)
        self.reloader = Reloader(
            self.config,
            [
                UpstreamsPart(self.mesh, policies, lambda: self.routes, self._install),
                FaultsPart(self.fault_table),
            ],
            None if source is None or isinstance(source, (Config, Mapping)) else self._load,
            self.metrics.reload,
        )

    def _load(self) -> Config:
        assert self.source is not None
        return client_view(self.name, load(self.source))

    def _install(
        self, config: Config, clusters: dict[str, Any], routes: dict[str, Route], _r: Router
    ) -> None:
        self.config = config
        self.cluster = clusters[self.name]
        self.routes = routes
        self.route = routes[self.name]
        self.rules = self.mesh.rule_router(self._policies, routes, self._to_upstream, self._rng)
        self.plane.routes_changed()  # cached route lookups of earlier header blocks
        self.plane.retry_buffer = retry_buffer(config)

    def _to_upstream(self, method: str, authority: str | None) -> Route:
        return self.route  # one channel is one upstream: where the sidecar has grpc_services

    async def reload(self, config: Source | None = None) -> ReloadResult:
        """Apply `config` (else the config file read again) to this upstream, live:
        calls in flight finish on the config they started with."""
        if config is None:
            return await self.reloader.reload()
        try:
            view = client_view(self.name, load(config))
        except ConfigError as exc:
            return await self.reloader.refuse(exc)
        return await self.reloader.reload(view)

    async def start(self, wait_s: float | None = None) -> None:
        """Start discovery and health checks; wait (bounded) for the first DNS answers."""
        self.pool.start()
        if self.tls is not None:
            self.tls.start()
        if self.tracer is not None:
            self.tracer.start()
        await self.mesh.start(wait_s if wait_s is not None else 2 * self.config.discovery.timeout_s)

    async def close(self) -> None:
        await self.mesh.stop()
        self.link.close()
        await self.plane.stop(0)  # calls still in flight end CANCELLED
        if self.tls is not None:
            self.tls.stop()
        await self.pool.close()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.close)  # the spans still queued go out


class _MultiCallable:
    __slots__ = ("_deserialize", "_head", "_link", "_serialize")

    def __init__(
        self,
        upstream: ClientUpstream,
        method: str,
        serialize: Serializer,
        deserialize: Deserializer,
    ) -> None:
        self._link = upstream.link
        self._head = upstream.link.head(method)  # built once: every call of it shares it
        self._serialize = serialize
        self._deserialize = deserialize


class UnaryUnaryMultiCallable(_MultiCallable):
    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> UnaryResponseCall:
        body = request if self._serialize is None else self._serialize(request)
        run = calls.unary(self._link, self._head, body, _pairs(metadata), timeout)
        return UnaryResponseCall(run, timeout, self._deserialize)


class UnaryStreamMultiCallable(_MultiCallable):
    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> UnaryStreamCall:
        body = request if self._serialize is None else self._serialize(request)
        opened = self._link.open(self._head, _pairs(metadata), timeout, unary=False, request=body)
        return UnaryStreamCall(opened, timeout, self._deserialize)


class StreamUnaryMultiCallable(_MultiCallable):
    def __call__(
        self,
        request_iterator: Any = None,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        **_: Any,
    ) -> StreamUnaryCall:
        requests = RequestStream(request_iterator, self._serialize)
        run = calls.client_stream(self._link, self._head, requests, _pairs(metadata), timeout)
        return StreamUnaryCall(run, requests, timeout, self._deserialize)


class StreamStreamMultiCallable(_MultiCallable):
    def __call__(
        self,
        request_iterator: Any = None,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        **_: Any,
    ) -> StreamStreamCall:
        link = self._link
        opened = link.open(self._head, _pairs(metadata), timeout, unary=False)
        return StreamStreamCall(opened, request_iterator, self._serialize, link.limit, timeout,
                                self._deserialize)  # fmt: skip


class Channel:
    """Stands in for a `grpc.aio.Channel` to one upstream: generated stubs work unchanged.

    `credentials`, `wait_for_ready` and `compression` are accepted and ignored: the
    connections to endpoints are plaintext, like the sidecar's, and a call with nowhere
    to go fails fast (`no_endpoints`) rather than waiting."""

    def __init__(self, upstream: ClientUpstream) -> None:
        self.upstream = upstream
        self._closed = False

    def unary_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> UnaryUnaryMultiCallable:
        return UnaryUnaryMultiCallable(
            self.upstream, method, request_serializer, response_deserializer
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> UnaryStreamMultiCallable:
        return UnaryStreamMultiCallable(
            self.upstream, method, request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> StreamUnaryMultiCallable:
        return StreamUnaryMultiCallable(
            self.upstream, method, request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> StreamStreamMultiCallable:
        return StreamStreamMultiCallable(
            self.upstream, method, request_serializer, response_deserializer
        )

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        return (
            grpc.ChannelConnectivity.READY
            if self.upstream.cluster.hosts
            else (grpc.ChannelConnectivity.TRANSIENT_FAILURE)
        )

    async def channel_ready(self) -> None:
        """Ready once discovery has answered (connect() already waited for it)."""
        return None

    async def wait_for_state_change(self, last_observed_state: Any) -> None:
        return None

    async def reload(self, config: Source | None = None) -> ReloadResult:
        """Reload this channel's upstream from `config` (a path, mapping or Config), or
        else from the file it was made from: the new config is checked whole first; a
        refused one leaves the running one in force (`result.result == "refused"`,
        with `key` and `reason`)."""
        return await self.upstream.reload(config)

    async def close(self, grace: float | None = None) -> None:
        if not self._closed:
            self._closed = True
            await self.upstream.close()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<sidecar.client.Channel {self.upstream.name} {self.upstream.cluster!r}>"


def load(config: Config | str | os.PathLike[str] | Mapping[str, Any]) -> Config:
    """A validated Config from any of the accepted forms (ConfigError names a bad key)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    return load_config(os.fspath(config))


async def connect(
    upstream: str,
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    *,
    policies: Policies | None = None,
    wait_s: float | None = None,
    registry: CollectorRegistry | None = None,
) -> Channel:
    """A channel to `upstream`, started: discovery has had its first answer (or `wait_s`,
    by default twice `discovery.timeout_s`, ran out). Its metrics go to `registry`
    (default: prometheus_client's default registry, the app's)."""
    up = ClientUpstream(upstream, load(config), policies=policies, registry=registry, source=config)
    await up.start(wait_s)
    return Channel(up)
