"""Mirroring: a route copies a share of its calls to a shadow upstream, fire and forget.

Does I/O by opening a `ClientStream` (grpc_client.py) on the plane's pool of
connections; it never touches the caller's stream. What the caller must never feel,
and how:
- the shadow's answer: it is read and dropped here (`_drain`), nothing reaches the call;
- its latency: the copy is sent once the caller's request is whole, on a stream of its
  own (its own flow-control window; the call never waits on it), and cut after
  `mirror.timeout_ms` whatever the caller's deadline;
- load: at most `mirror.max_in_flight` shadow calls per route; a copy beyond that is
  shed at once (counted `shed`), so under load shadow calls are what goes first, and a
  request over `mirror.max_request_bytes` is not copied (`too_large`);
- its failures: counted apart (`sidecar_mirror_calls_total{upstream,result}`, on the
  host's registry: the Counter it is handed), never
  in the caller's metrics; the shadow endpoint's breaker and EWMA see them, as those
  belong to the shadow upstream's own cluster.
A call the caller cancels before its request is whole leaves its copy unsent
(`abandoned`). The copy carries the caller's headers and request id (so its logs join
the original's), with `grpc-timeout` of the shadow's own timeout.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from sidecar.config import MirrorConfig
from sidecar.h2relay.grpc_client import Answer, ClientStream
from sidecar.h2relay.grpcwire import encode_timeout
from sidecar.h2relay.hpack_codec import encode_literal
from sidecar.metrics import PlaneMetrics
from sidecar.outcome import Outcome, classify

if TYPE_CHECKING:
    import asyncio

    from sidecar.cluster.cluster import Host
    from sidecar.h2relay.pool import Pool

_TIMEOUT = b"grpc-timeout"
_REQUEST_ID = b"x-request-id"


class Mirror:
    """One route's shadow: which calls are copied, and how many may be in flight."""

    __slots__ = ("_counters", "cluster", "in_flight", "limit", "rng", "spec", "upstream")

    def __init__(
        self,
        upstream: str,
        cluster: Any,
        spec: MirrorConfig,
        rng: random.Random,
        counter: Counter | None = None,
    ) -> None:
        self.upstream = upstream
        self.cluster = cluster  # the shadow upstream's Cluster
        self.spec = spec
        self.rng = rng
        self.in_flight = 0
        self.limit = spec.max_in_flight
        if counter is None:  # counted nowhere (a part built alone, in a unit test)
            counter = PlaneMetrics().mirror_calls
        self._counters = {
            r: counter.labels(upstream, r)
            for r in ("ok", "failed", "timeout", "shed", "too_large", "abandoned")
        }

    def copy(self, pool: Pool, block: bytes, request_id: bytes, limit: int) -> Shadow | None:
        """A copy for this call (it collects the request), or None: not sampled, or shed."""
        percent = self.spec.percent
        if percent < 100 and self.rng.random() * 100 >= percent:
            return None
        if self.in_flight >= self.limit:
            self.count("shed")
            return None
        self.in_flight += 1
        return Shadow(self, pool, block, request_id, limit)

    def count(self, result: str) -> None:
        self._counters[result].inc()

    def done(self, result: str) -> None:
        self.in_flight -= 1
        self.count(result)

    def __repr__(self) -> str:
        spec = self.spec
        return (
            f"Mirror(to {self.upstream} {spec.percent:g}% in_flight={self.in_flight}/{self.limit})"
        )


class Shadow:
    """One call's copy: collects the request as the caller sends it, then goes."""

    __slots__ = (
        "block", "chunks", "ended", "host", "limit", "mirror", "pool", "request_id",
        "size", "started", "stream", "timer",
    )  # fmt: skip

    def __init__(
        self, mirror: Mirror, pool: Pool, block: bytes, request_id: bytes, limit: int
    ) -> None:
        self.mirror = mirror
        self.pool = pool
        self.block = block
        self.request_id = request_id
        self.limit = min(limit, mirror.spec.max_request_bytes)
        self.chunks: list[bytes] = []
        self.size = 0
        self.ended = False  # counted and its slot given back
        self.stream: ClientStream | None = None
        self.host: Host | None = None
        self.started = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def feed(self, chunks: list[bytes], end: bool) -> None:
        """Request bytes from the caller; `end`: the request is whole, the copy goes."""
        if self.ended or self.stream is not None:
            return
        for data in chunks:
            self.size += len(data)
            if self.size > self.limit:
                self.chunks = []
                self._end("too_large")
                return
            if data:
                self.chunks.append(data)
        if end:
            self._send()

    def abandon(self) -> None:
        """The call ended before its request was whole: the copy is not sent."""
        if not self.ended and self.stream is None:
            self.chunks = []
            self._end("abandoned")

    def _send(self) -> None:
        mirror = self.mirror
        now = time.monotonic()
        host = mirror.cluster.pick(now)
        if host is None:
            self._end("failed")  # no endpoint to copy to
            return
        timeout_s = mirror.spec.timeout_ms / 1000
        block = self.block + encode_literal(_TIMEOUT, encode_timeout(timeout_s))
        if self.request_id:
            block += encode_literal(_REQUEST_ID, self.request_id)
        pool = self.pool
        stream = self.stream = ClientStream(pool.loop, block, 1 << 31, cache_reads=False)
        self.host = host
        self.started = now
        host.start(now)
        stream.start(pool.get(host.endpoint))
        stream.send(b"".join(self.chunks), True)
        self.chunks = []
        stream.ended.add_done_callback(self._answered)
        self._drain(None)
        self.timer = pool.loop.call_later(timeout_s, self._timed_out)

    def _drain(self, _: object) -> None:
        """The shadow's messages are read and dropped, so its window stays open."""
        stream = self.stream
        if stream is None or stream.ended.done():
            return
        while stream.take() is not None:
            pass
        stream.wait_readable().add_done_callback(self._drain)

    def _timed_out(self) -> None:
        self.timer = None
        stream = self.stream
        if stream is not None and not stream.ended.done():
            self._finish(Outcome.TIMEOUT, "timeout")
            stream.cancel("the shadow call ran out of mirror.timeout_ms")

    def _answered(self, ended: asyncio.Future[Answer]) -> None:
        if self.ended or ended.cancelled():
            return
        answer = ended.result()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        outcome = classify(answer.code)
        self._finish(outcome, "ok" if answer.code == "OK" else "failed")

    def _finish(self, outcome: Outcome, result: str) -> None:
        host = self.host
        if host is not None:
            now = time.monotonic()
            host.finish(outcome, now - self.started, now)
            self.host = None
        self._end(result)

    def _end(self, result: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.mirror.done(result)
