"""The inbound listener's own grpc.health.v1.Health service.

Does I/O only through grpcio. SERVING while the local app is healthy and the sidecar
is not draining; NOT_SERVING otherwise, so peers' health checks and balancers move
traffic away before the listener stops. Answers for "" (the whole server) and for the
names given (this instance's service, the app's checked service name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

_HANDLERS = {
    "Check": (grpc.unary_unary_rpc_method_handler, "Check"),
    "Watch": (grpc.unary_stream_rpc_method_handler, "Watch"),
}


class InboundHealth:
    def __init__(self, names: Iterable[str] = ()) -> None:
        self.servicer = health_aio.HealthServicer()
        self.names = sorted({"", *names})
        self.app_healthy = False
        self.draining = False
        # told after every update (the h2relay plane's Health/Watch streams listen here)
        self.listeners: list[Callable[[], None]] = []

    @property
    def serving(self) -> bool:
        return self.app_healthy and not self.draining

    async def update(
        self, *, app_healthy: bool | None = None, draining: bool | None = None
    ) -> None:
        if app_healthy is not None:
            self.app_healthy = app_healthy
        if draining is not None:
            self.draining = draining
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self.names:
            await self.servicer.set(name, status)
        for listener in list(self.listeners):
            listener()

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Method path -> handler, for the inbound listener to answer itself."""
        return {
            f"/grpc.health.v1.Health/{name}": make(
                getattr(self.servicer, attr),
                request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
            )
            for name, (make, attr) in _HANDLERS.items()
        }
