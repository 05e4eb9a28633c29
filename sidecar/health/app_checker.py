"""Periodic health check of the local app: grpc.health.v1 or a TCP connect.

Does I/O (one channel or one TCP connect per check). The inbound listener reports
the result through its own grpc.health.v1 service, and `/ready` waits for it.
Mode `grpc` asks `Health/Check` for `inbound.health.service`; an app without the
health service (UNIMPLEMENTED) that answers at all is taken as serving. Mode `tcp`
only proves the port accepts connections; `none` trusts the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2

from sidecar.config import AppHealth
from sidecar.endpoint import parse_hostport

log = logging.getLogger(__name__)

_CHECK = "/grpc.health.v1.Health/Check"


class AppChecker:
    def __init__(self, config: AppHealth, address: str) -> None:
        self.config = config
        self.address = address
        self.healthy: bool | None = None if config.mode != "none" else True
        self._listeners: list[Callable[[bool], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None

    def on_change(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    async def check_once(self) -> bool:
        """Check the app now; return whether it is serving."""
        if self.config.mode == "none":
            return True
        if self.config.mode == "tcp":
            return await self._tcp()
        return await self._grpc()

    async def _tcp(self) -> bool:
        host, port = parse_hostport(self.address)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.config.timeout_s
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _grpc(self) -> bool:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        check = self._channel.unary_unary(
            _CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply = await check(
                health_pb2.HealthCheckRequest(service=self.config.service),
                timeout=self.config.timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            return bool(err.code() is grpc.StatusCode.UNIMPLEMENTED)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def _set(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        log.info("local app at %s is %s", self.address, "serving" if healthy else "NOT serving")
        self.healthy = healthy
        for listener in self._listeners:
            listener(healthy)

    async def run(self) -> None:
        while True:
            self._set(await self.check_once())
            await asyncio.sleep(self.config.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._channel is not None:
            await self._channel.close()
