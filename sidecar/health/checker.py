"""Active health checks of upstream endpoints (`upstreams.NAME.health_check`).

Does I/O: every `interval_s`, one grpc.health.v1 `Health/Check` per endpoint of the
upstream, all at once, each bounded by `timeout_s`. The verdicts go to
`Cluster.record_health_check`, whose pure threshold logic (sidecar/health/state.py)
decides when an endpoint stops or starts being picked.

The check rides the data plane's pooled channel to the endpoint, so it tests the very
connection calls would use (and keeps it warm). It asks for `health_check.service`
("" by default: the whole server, which a peer's inbound sidecar answers SERVING only
while its app is healthy and it is not draining). SERVING passes; so does
UNIMPLEMENTED (an endpoint without the health service that answers at all is up, as
for the local app's check); anything else, a timeout included, fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2

from sidecar.cluster import Cluster
from sidecar.config import HealthCheck
from sidecar.proxy.channels import ChannelPool

log = logging.getLogger(__name__)

_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = health_pb2.HealthCheckResponse.SERVING


class EndpointChecker:
    """Checks every endpoint of one cluster on its interval."""

    def __init__(self, cluster: Cluster, config: HealthCheck, pool: ChannelPool) -> None:
        self.cluster = cluster
        self.config = config
        self.pool = pool
        self._request = health_pb2.HealthCheckRequest(service=config.service).SerializeToString()

    async def check(self, address: str) -> bool:
        """One check of one endpoint; True when it passes."""
        with self.pool.lease(address, time.monotonic()) as pooled:
            try:
                raw = await pooled.stub(_CHECK, "unary")(
                    self._request, timeout=self.config.timeout_s
                )
            except grpc.aio.AioRpcError as err:
                return bool(err.code() is grpc.StatusCode.UNIMPLEMENTED)
        try:
            reply = health_pb2.HealthCheckResponse.FromString(raw)
        except Exception:  # a garbled answer is a failed check
            return False
        return bool(reply.status == _SERVING)

    async def check_all(self) -> None:
        """One round: check every endpoint at once and record the verdicts."""
        hosts = self.cluster.hosts
        results = await asyncio.gather(
            *(self.check(h.endpoint.address) for h in hosts), return_exceptions=True
        )
        now = time.monotonic()
        for host, ok in zip(hosts, results, strict=True):
            passed = ok is True
            before = host.health.healthy if host.health is not None else None
            self.cluster.record_health_check(host.endpoint.key, passed, now)
            after = host.health.healthy if host.health is not None else None
            if before != after:
                log.warning(
                    "health check: %s/%s is now %s",
                    self.cluster.name,
                    host.endpoint.address,
                    "healthy" if after else "unhealthy",
                )

    async def run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.config.interval_s)


class HealthCheckers:
    """The checkers of every upstream with `health_check` set; started and stopped by
    the app."""

    def __init__(
        self,
        clusters: Mapping[str, Cluster],
        configs: Mapping[str, HealthCheck | None],
        pool: ChannelPool,
    ) -> None:
        self.checkers = [
            EndpointChecker(clusters[name], cfg, pool)
            for name, cfg in configs.items()
            if cfg is not None and name in clusters
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(c.run()) for c in self.checkers]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
