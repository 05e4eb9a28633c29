"""The in-process client's channel: one upstream's whole outbound side inside the app.

Does I/O (discovery, health checks, per-endpoint grpcio channels). What a sidecar's
outbound listener does for a call, minus the hop: the same `Cluster` (sites, SRV
priorities, balancer, breakers), the same `Membership` (SRV discovery), the same
active health checks, and the same pipeline (sidecar/proxy/pipeline.py: deadline,
limits, throttling, faults, retries within the budget, per-try timeouts, metrics)
over the same `ChannelPool`. New code: the caller's side, turning a stub's call into
the pipeline's raw bytes and back (sidecar/client/call.py), and the transport of unary
attempts (sidecar/client/wire.py, over h2relay's connections: a third of grpcio's
client CPU per call); streaming calls go over the pool's grpcio channels.

What a proxy hop does and this cannot: route by `:path` (a channel is one upstream,
as a stub is one service), strip the caller's hop-by-hop headers (there is no hop),
or shed inbound load (that is the callee's sidecar's job, unchanged).
"""

from __future__ import annotations

import random
import time
from collections.abc import Coroutine
from typing import Any

import grpc

from sidecar.client.call import (
    Deserializer,
    RequestStream,
    Serializer,
    StreamStreamCall,
    StreamUnaryCall,
    UnaryResponseCall,
    UnaryStreamCall,
)
from sidecar.client.wire import Wires
from sidecar.cluster import Cluster
from sidecar.config import Config, ConfigError
from sidecar.discovery.membership import Membership
from sidecar.endpoint import Endpoint, parse_hostport
from sidecar.faults import FaultTable
from sidecar.health.checker import HealthCheckers
from sidecar.policy import Policies
from sidecar.policy_adapters import default_policies
from sidecar.proxy.channels import ChannelPool
from sidecar.proxy.forward import Answer, Caller
from sidecar.proxy.pipeline import Pipeline
from sidecar.route import Route


class Upstream:
    """Everything one upstream needs, built from its config section as sidecar/app.py
    builds it (one implementation, two hosts)."""

    def __init__(
        self,
        name: str,
        config: Config,
        *,
        policies: Policies | None = None,
        direction: str = "outbound",
        rng: random.Random | None = None,
    ) -> None:
        up = config.upstreams.get(name)
        if up is None:
            raise ConfigError(f"upstreams.{name}", "no such upstream in the config")
        policies = policies or default_policies()
        self.name = name
        # discovery for this upstream only, and never registration (the app's sidecar,
        # if any, registers the app; the client only calls out)
        self.config = config.model_copy(update={"upstreams": {name: up}, "registration": None})
        idle_s = config.outbound.channel_idle_timeout_s if config.outbound else 300.0
        # unary attempts over the relay's HTTP/2 connections, the rest over grpcio channels
        self.wires = Wires(config.max_message_bytes, idle_s)
        self.pool = ChannelPool(config.max_message_bytes, idle_s, wire=self.wires)
        self.cluster = Cluster.from_config(
            name, up, config.upstream_sites(name), rng or random.Random()
        )
        if up.endpoints is not None:
            self.cluster.update(
                config.site, [_endpoint(a, config.site) for a in up.endpoints], time.monotonic()
            )
        self.route = Route.from_config(name, up, self.cluster, policies.calls(name, up))
        self.fault_table = FaultTable({name: up.faults})
        self.pipeline = Pipeline(direction, self.pool, faults=policies.faults(self.fault_table))
        self.membership = Membership(self.config, {name: self.cluster}, lambda: False)
        self.checkers = HealthCheckers({name: self.cluster}, {name: up.health_check}, self.pool)

    async def start(self, wait_s: float | None = None) -> None:
        """Start discovery and health checks; wait (bounded) for the first DNS answers."""
        self.pool.start()
        self.wires.start()
        self.checkers.start()
        await self.membership.start()
        discovery = self.membership.discovery
        if discovery is not None:
            await discovery.wait_ready(
                wait_s if wait_s is not None else 2 * self.config.discovery.timeout_s
            )

    async def close(self) -> None:
        await self.membership.stop()
        await self.checkers.close()
        await self.pool.close()
        await self.wires.close()

    async def run(self, method: str, kind: str, request: Any, caller: Caller) -> Answer:
        return await self.pipeline.answer(self.route, method, kind, request, caller)


def _endpoint(address: str, site: str) -> Endpoint:
    host, port = parse_hostport(address)
    return Endpoint(host, port, site=site)


class _MultiCallable:
    __slots__ = ("_deserialize", "_kind", "_method", "_run", "_serialize", "_upstream")

    def __init__(
        self,
        upstream: Upstream,
        kind: str,
        method: str,
        serialize: Serializer,
        deserialize: Deserializer,
    ) -> None:
        self._upstream = upstream
        self._kind = kind
        self._method = method
        self._serialize = serialize
        self._deserialize = deserialize
        self._run = self._runner()  # built once: every call of this method shares it

    def _runner(self) -> Any:
        answer, route = self._upstream.pipeline.answer, self._upstream.route
        method, kind = self._method, self._kind

        def runner(request: Any, caller: Caller) -> Coroutine[Any, Any, Answer]:
            return answer(route, method, kind, request, caller)

        return runner


class UnaryUnaryMultiCallable(_MultiCallable):
    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> UnaryResponseCall:
        body = request if self._serialize is None else self._serialize(request)
        return UnaryResponseCall(self._run, body, timeout, metadata, self._deserialize)


class UnaryStreamMultiCallable(_MultiCallable):
    def __call__(
        self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> UnaryStreamCall:
        body = request if self._serialize is None else self._serialize(request)
        return UnaryStreamCall(self._run, body, timeout, metadata, self._deserialize)


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
        return StreamUnaryCall(self._run, requests, timeout, metadata, self._deserialize)


class StreamStreamMultiCallable(_MultiCallable):
    def __call__(
        self,
        request_iterator: Any = None,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        **_: Any,
    ) -> StreamStreamCall:
        requests = RequestStream(request_iterator, self._serialize)
        return StreamStreamCall(self._run, requests, timeout, metadata, self._deserialize)


class Channel:
    """Stands in for a `grpc.aio.Channel` to one upstream: generated stubs work unchanged.

    `credentials`, `wait_for_ready` and `compression` are accepted and ignored: the
    per-endpoint channels are plaintext, like the sidecar's, and a call with nowhere to
    go fails fast (`no_endpoints`) rather than waiting."""

    def __init__(self, upstream: Upstream) -> None:
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
            self.upstream, "unary", method, request_serializer, response_deserializer
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> UnaryStreamMultiCallable:
        return UnaryStreamMultiCallable(
            self.upstream, "server_stream", method, request_serializer, response_deserializer
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> StreamUnaryMultiCallable:
        return StreamUnaryMultiCallable(
            self.upstream, "client_stream", method, request_serializer, response_deserializer
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Deserializer = None,
        _registered_method: bool | None = False,
    ) -> StreamStreamMultiCallable:
        return StreamStreamMultiCallable(
            self.upstream, "bidi", method, request_serializer, response_deserializer
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
