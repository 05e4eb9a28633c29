"""Active health checks of upstream endpoints (`upstreams.NAME.health_check`).

Does I/O: every `interval_s`, one grpc.health.v1 `Health/Check` per endpoint of the
upstream, all at once, each bounded by `timeout_s`. The verdicts go to
`Cluster.record_health_check`, whose pure threshold logic (sidecar/health/state.py)
decides when an endpoint stops or starts being picked.

The check rides the relay pool's HTTP/2 connection to the endpoint (a gRPC client
stream, sidecar/h2relay/grpc_client.py, on the pool's `Upstream`), so it tests the very
connection calls use (and keeps it warm), and an endpoint sees no second connection. It asks for `health_check.service`
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

from grpc_health.v1 import health_pb2

from sidecar.cluster import Cluster
from sidecar.config import HealthCheck
from sidecar.endpoint import Endpoint
from sidecar.h2relay.grpc_client import ClientStream, frame, request_block, request_head
from sidecar.h2relay.pool import Pool

log = logging.getLogger(__name__)

_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_LIMIT = 64 * 1024  # a HealthCheckResponse is a few bytes: anything larger is garbled


class EndpointChecker:
    """Checks every endpoint of one cluster on its interval."""

    def __init__(self, cluster: Cluster, config: HealthCheck, pool: Pool) -> None:
        self.cluster = cluster
        self.config = config
        self.pool = pool
        request = health_pb2.HealthCheckRequest(service=config.service).SerializeToString()
        self._request = frame(request)

    async def check(self, endpoint: Endpoint) -> bool:
        """One check of one endpoint; True when it passes."""
        pool = self.pool
        timeout = self.config.timeout_s
        block = request_block(request_head(_CHECK, endpoint.address), (), timeout)
        # cache_reads off: the answer's header blocks are shared with relayed calls
        stream = ClientStream(pool.loop, block, _LIMIT, unary=True, cache_reads=False)
        stream.send(self._request, True)
        stream.start(pool.get(endpoint, self.cluster.name))  # over mTLS when the calls are
        timer = pool.loop.call_later(timeout, stream.cancel, "health check timed out")
        try:
            answer = await stream.ended
        except BaseException:
            stream.cancel()
            raise
        finally:
            timer.cancel()
        if answer.code != "OK":
            return answer.code == "UNIMPLEMENTED"
        try:
            reply = health_pb2.HealthCheckResponse.FromString(answer.response or b"")
        except Exception:  # a garbled answer is a failed check
            return False
        return bool(reply.status == _SERVING)

    async def check_all(self) -> None:
        """One round: check every endpoint at once and record the verdicts."""
        hosts = self.cluster.hosts
        results = await asyncio.gather(
            *(self.check(h.endpoint) for h in hosts), return_exceptions=True
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
    """The checkers of every upstream with `health_check` set, over the connections of
    `pool` (the data plane's); started and stopped by the app, which owns the pool."""

    def __init__(
        self,
        clusters: Mapping[str, Cluster],
        configs: Mapping[str, HealthCheck | None],
        pool: Pool,
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
