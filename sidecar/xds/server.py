"""The ADS server: serves the xDS catalogue to proxyless gRPC clients and Envoys.

Does I/O (a grpc.aio server). Policy lives elsewhere: resources are built by
`sidecar.xds.resources` (pure) and each stream's ACK/NACK and subscription logic by
`sidecar.xds.stream` (pure); this module only moves messages and wakes streams.

Versions are per type URL and global: a type's version goes up by one whenever any
of its resources changes, so every client of a type sees the same version for the
same content. `update()` and `publish()` must be called on the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2_grpc
from google.protobuf import json_format

from sidecar.config import RouteConfig
from sidecar.endpoint import parse_hostport
from sidecar.xds.csds import ClientStatus
from sidecar.xds.resources import TYPE_URLS, Resources, UpstreamSnapshot, build_resources
from sidecar.xds.stream import Catalogue, StreamState

log = logging.getLogger(__name__)

_UPDATE = object()  # queue marker: the catalogue changed


class XdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """`XdsServer("127.0.0.1:0")`; `await start()`; `update(snapshots)`; `dump()`."""

    def __init__(
        self,
        listen: str = "127.0.0.1:18000",
        *,
        inline_routes: bool = False,
        endpoint_localities: bool = True,
        rules: Sequence[RouteConfig] = (),
    ) -> None:
        parse_hostport(listen)  # refuse a bad address before binding
        self.rules = rules  # the config's `routes`, served ahead of each upstream's route
        self.listen = listen
        self.port = 0
        self.inline_routes = inline_routes
        self.endpoint_localities = endpoint_localities
        self._catalogue: dict[str, dict[str, bytes]] = {t: {} for t in TYPE_URLS}
        self._json: dict[str, dict[str, Any]] = {t: {} for t in TYPE_URLS}
        self._versions: dict[str, str] = {t: "0" for t in TYPE_URLS}
        self._skipped: tuple[str, ...] = ()
        self._streams: dict[int, tuple[StreamState, asyncio.Queue[Any]]] = {}
        self._server: grpc.aio.Server | None = None
        self._next_stream = 0

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> int:
        """Bind and serve; return the bound port (useful with port 0)."""
        server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, server)
        csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(
            ClientStatus(self.clients), server
        )
        self.port = server.add_insecure_port(self.listen)
        if not self.port:
            raise OSError(f"xds: cannot bind {self.listen}")
        await server.start()
        self._server = server
        log.info("xds: ADS server on %s (port %d)", self.listen, self.port)
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # -- catalogue ---------------------------------------------------------------

    def update(self, snapshots: Mapping[str, UpstreamSnapshot]) -> bool:
        """Rebuild every resource from discovery state; push what changed. True if anything did."""
        return self.publish(
            build_resources(
                snapshots,
                inline_routes=self.inline_routes,
                endpoint_localities=self.endpoint_localities,
                rules=self.rules,
            )
        )

    def publish(self, resources: Resources) -> bool:
        """Serve exactly these resources (any messages: tests use it to send bad ones)."""
        changed = False
        for type_url in TYPE_URLS:
            encoded = {
                name: msg.SerializeToString(deterministic=True)
                for name, msg in resources.get(type_url).items()
            }
            if encoded != self._catalogue[type_url]:
                self._catalogue[type_url] = encoded
                self._json[type_url] = {
                    name: json_format.MessageToDict(msg)
                    for name, msg in resources.get(type_url).items()
                }
                self._versions[type_url] = str(int(self._versions[type_url]) + 1)
                changed = True
        if resources.skipped != self._skipped:
            for reason in resources.skipped:
                log.warning("xds: endpoint left out: %s", reason)
            self._skipped = resources.skipped
        if changed:
            for _, queue in self._streams.values():
                queue.put_nowait(_UPDATE)
        return changed

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    @property
    def versions(self) -> Mapping[str, str]:
        return dict(self._versions)

    def clients(self) -> list[StreamState]:
        return [state for state, _ in self._streams.values()]

    def dump(self) -> dict[str, Any]:
        """For /config_dump: resources and versions served, and every client's state."""
        return {
            "listen": self.listen,
            "port": self.port,
            "versions": dict(self._versions),
            "resources": {t: dict(r) for t, r in self._json.items()},
            "skipped": list(self._skipped),
            "clients": [state.dump() for state in self.clients()],
        }

    # -- the ADS stream ----------------------------------------------------------

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        self._next_stream += 1
        key = self._next_stream
        state = StreamState(context.peer())
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[key] = (state, queue)

        async def read() -> None:
            try:
                async for req in request_iterator:
                    queue.put_nowait(req)
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                now = time.time()
                if item is _UPDATE:
                    responses = state.on_catalogue(self._catalogue, self._versions, now)
                else:
                    responses = state.on_request(item, self._catalogue, self._versions, now)
                for response in responses:
                    yield response
        finally:
            reader.cancel()
            del self._streams[key]
            log.info("xds: stream from %s (%s) closed", state.peer, state.node_id)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "only state-of-the-world ADS")
