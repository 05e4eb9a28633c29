"""The sidecar's relay listeners (outbound, inbound), and what the inbound one answers
itself: grpc.health.v1 Check and Watch.

Does I/O (binds the listeners). Takes what sidecar/app.py built: the outbound router
(method, authority -> `Route`), the inbound route to the local app, the admission and
fault policies, and the inbound health state, which the relay answers itself for
grpc.health.v1 Check and Watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health_pb2

from sidecar import native
from sidecar.access_log import AccessLog
from sidecar.config import Config
from sidecar.endpoint import parse_hostport
from sidecar.h2relay.call import Call
from sidecar.h2relay.connection import Settings
from sidecar.h2relay.local_reply import LocalMethod
from sidecar.h2relay.plane import Plane
from sidecar.h2relay.pool import Pool
from sidecar.health.service import InboundHealth
from sidecar.metrics import Metrics
from sidecar.policy import AdmissionPolicy, FaultInjector
from sidecar.route import Route
from sidecar.tracing import make_tracer

log = logging.getLogger(__name__)


def health_check(health: InboundHealth) -> LocalMethod:
    """grpc.health.v1.Health/Check from the sidecar's own view (app healthy, not draining)."""

    def check(body: bytes) -> tuple[str, str, bytes | None]:
        try:
            request = health_pb2.HealthCheckRequest.FromString(body)
        except Exception:
            return "INVALID_ARGUMENT", "undecodable HealthCheckRequest", None
        if request.service not in health.names:
            return "NOT_FOUND", f"unknown service {request.service!r}", None
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if health.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return "OK", "", health_pb2.HealthCheckResponse(status=status).SerializeToString()

    return check


class HealthWatch:
    """grpc.health.v1.Health/Watch: the current status at once, then every change
    (NOT_SERVING while draining), until the caller leaves or the listener stops; an
    unknown service gets SERVICE_UNKNOWN and stays watched (grpc's HealthServicer)."""

    streaming = True

    def __init__(self, health: InboundHealth) -> None:
        self.health = health
        self.watchers: dict[Call, tuple[str, int]] = {}  # call -> (service, last status sent)
        self.health.listeners.append(self._changed)

    def open(self, call: Call, body: bytes) -> _Subscription | None:
        try:
            request = health_pb2.HealthCheckRequest.FromString(body)
        except Exception:
            call.local_end("INVALID_ARGUMENT", "undecodable HealthCheckRequest")
            return None
        status = self._status(request.service)
        self.watchers[call] = (request.service, status)
        call.local_send(_response(status))
        return _Subscription(self, call)

    def _status(self, service: str) -> int:
        codes = health_pb2.HealthCheckResponse
        if service not in self.health.names:
            return int(codes.SERVICE_UNKNOWN)
        return int(codes.SERVING if self.health.serving else codes.NOT_SERVING)

    def _changed(self) -> None:
        for call, (service, sent) in list(self.watchers.items()):
            status = self._status(service)
            if status != sent:
                self.watchers[call] = (service, status)
                call.local_send(_response(status))

    def close(self) -> None:
        """The listener stops: end every watch (they saw NOT_SERVING when draining began)."""
        watchers, self.watchers = self.watchers, {}
        for call in watchers:
            call.local_end("UNAVAILABLE", "sidecar shutting down")


class _Subscription:
    """Held as the call's waiter: the caller's cancel forgets the watch."""

    __slots__ = ("call", "watch")

    def __init__(self, watch: HealthWatch, call: Call) -> None:
        self.watch = watch
        self.call = call

    def cancel(self) -> None:
        self.watch.watchers.pop(self.call, None)


def _response(status: int) -> bytes:
    return bytes(health_pb2.HealthCheckResponse(status=status).SerializeToString())


def listener_settings(http2: Any) -> Settings:
    """A listener's HTTP/2 settings and limits from its `http2` config block."""
    return Settings(
        max_streams=http2.max_concurrent_streams,
        max_header_list=http2.max_header_list_size,
        max_continuation_frames=http2.max_continuation_frames,
        max_empty_frames=http2.max_consecutive_inbound_frames_with_empty_payload,
        max_priority_per_stream=http2.max_inbound_priority_frames_per_stream,
        max_window_updates_per_data=http2.max_inbound_window_update_frames_per_data_frame_sent,
        max_control_per_s=http2.max_inbound_control_frames_per_s,
        max_outbound_control=http2.max_outbound_control_frames,
        premature_reset_lifetime_s=http2.premature_reset_min_stream_lifetime_s,
        premature_reset_streams=http2.premature_reset_total_stream_count,
        preface_timeout_s=http2.preface_timeout_s,
        frame_timeout_s=http2.frame_timeout_s,
        idle_timeout_s=http2.idle_timeout_s,
        max_connections=http2.max_connections,
        max_buffered=http2.max_buffered_bytes,
    )


def retry_buffer(config: Config) -> int:
    """How much of a request stream a call keeps for a replay: the most any upstream's
    `retries.buffer_bytes` asks, a route's own included (a call does not know its route's
    before it routes)."""
    return max(
        [
            *(up.retries.buffer_bytes for up in config.upstreams.values() if up.retries),
            *(r.retries.buffer_bytes for r in config.routes if r.retries),  # a route's own
        ],
        default=1 << 20,
    )


class RelayDataPlane:
    """The h2relay listeners of one sidecar."""

    def __init__(
        self,
        config: Config,
        outbound_route: Callable[[str, str | None], Any],
        app_route: Route | None,
        health: InboundHealth,
        admission: AdmissionPolicy | None,
        faults: FaultInjector,
        pool: Pool,
        metrics: Metrics,
        tls: Any = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.tls = tls  # sidecar/tls/runtime.py's MeshTls, or None
        self.outbound_route = outbound_route
        self.app_route = app_route
        self.health = health
        self.admission = admission
        self.faults = faults
        self.planes: dict[str, Plane] = {}
        self.pool = pool  # the host's: the active health checks ride its connections too
        self.watch: HealthWatch | None = None
        # one access log for both listeners (None: off, and the relay skips it)
        self.access_log = (
            AccessLog(config.access_log, metrics.access_log)
            if config.access_log is not None
            else None
        )
        # one tracer for both listeners (None: `tracing: off`, and the relay skips it)
        self.tracer = make_tracer(config, metrics.tracing)

    async def start(self) -> dict[str, int]:
        config = self.config
        log.info("h2relay data plane: %s", native.describe())
        if self.access_log is not None:
            self.access_log.start()
        if self.tracer is not None:
            self.tracer.start()
        ports: dict[str, int] = {}
        common: dict[str, Any] = {
            "new_call": Call,
            "metrics": self.metrics.plane,
            "max_message_bytes": config.max_message_bytes,
            "faults": self.faults,
            "retry_buffer": retry_buffer(config),
            "access_log": self.access_log,
            "tracer": self.tracer,
        }
        if config.outbound is not None:
            plane = Plane(
                "outbound",
                self.outbound_route,
                self.pool,
                settings=listener_settings(config.outbound.http2),
                **common,
            )
            ports["outbound"] = await plane.listen(*parse_hostport(config.outbound.listen))
            self.planes["outbound"] = plane
        if config.inbound is not None:
            app_route = self.app_route

            def to_app(method: str, authority: str | None) -> Any:
                # every call goes to the app, but health calls, which the sidecar answers
                return None if method.startswith("/grpc.health.v1.") else app_route

            self.watch = HealthWatch(self.health)
            mode = config.inbound_mtls
            tls = self.tls
            authz = None
            if config.inbound.authz is not None:
                from sidecar.authz.step import InboundAuthz

                authz = InboundAuthz.from_config(
                    config.inbound.authz, config.domain, self.metrics.authz
                )
            plane = Plane(
                "inbound",
                to_app,
                self.pool,
                admission=self.admission,
                local_methods={
                    "/grpc.health.v1.Health/Check": health_check(self.health),
                    "/grpc.health.v1.Health/Watch": self.watch,  # type: ignore[dict-item]
                },
                settings=listener_settings(config.inbound.http2),
                authz=authz,
                tls=(
                    (tls.server_context, mode, self.metrics.tls)
                    if tls is not None and mode != "off"
                    else None
                ),
                **common,
            )
            ports["inbound"] = await plane.listen(*parse_hostport(config.inbound.listen))
            self.planes["inbound"] = plane
        return ports

    async def stop(self, grace_s: float) -> None:
        if self.watch is not None:
            self.watch.close()
        for name in ("inbound", "outbound"):
            plane = self.planes.get(name)
            if plane is not None:
                await plane.stop(grace_s)
        if self.access_log is not None:
            self.access_log.close()  # the calls are over: the lines still buffered go out
        if self.tracer is not None:
            # likewise the spans still queued; on a thread: an export to a collector that is
            # down waits up to `tracing.timeout_s`, and the loop has other hosts to stop
            await asyncio.to_thread(self.tracer.close)

    def routes_changed(self, config: Config) -> None:
        """A config reload changed the upstreams: resolve cached header blocks again, and
        buffer requests for a replay as the new `retries.buffer_bytes` say."""
        for plane in self.planes.values():
            plane.routes_changed()
            plane.retry_buffer = retry_buffer(config)

    def __len__(self) -> int:
        return len(self.pool)
