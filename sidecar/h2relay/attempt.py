"""One attempt of a call: one stream to one endpoint, from the pick to its report.

Does I/O only by queueing frames on the attempt's pooled upstream connection (pool.py
writes them out). Envoy's `UpstreamRequest` (source/common/router/upstream_request.h) is
the model: the attempt owns its endpoint, its stream, its start time and its response
state, and says what happened (`Failure`) instead of acting on its call; the call
(call.py) decides what follows (a retry, or which answer the caller gets). A retry is a
new `Attempt`, so nothing of the last one's state can leak into the next.

An attempt is reported exactly once (`end`): `host.finish` with the outcome from
sidecar/outcome.py feeds the endpoint's breaker and latency score (Nygard's circuit
breaker; Envoy's outlier detection only *receives* results the same way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar.cluster.cluster import Host
from sidecar.h2relay.grpcwire import MessageLimit
from sidecar.h2relay.request import PreparedResponse
from sidecar.outcome import EXPLAIN, Outcome, classify

if TYPE_CHECKING:  # the connection layer above, for its types only (it imports no attempt)
    from sidecar.h2relay.pool import UpstreamConnection, UpstreamStream


class Failure:
    """How an attempt failed, and the answer the caller gets if no retry follows: the
    upstream's own trailers-only answer (`block`, forwarded as it came), or a sidecar
    error (`status`, `message`, `x-sidecar-error: reason`)."""

    __slots__ = ("block", "message", "outcome", "pushback", "reason", "status")

    def __init__(
        self,
        status: str,
        outcome: Outcome,
        reason: str | None,
        message: str = "",
        block: bytes | None = None,
        pushback: bytes | None = None,
    ) -> None:
        self.status = status  # gRPC status name
        self.outcome = outcome  # what the endpoint's policies learn
        # x-sidecar-error: ours (connect_failed, ...) or, with `block`, the peer sidecar's
        self.reason = reason
        self.message = message
        self.block = block
        self.pushback = pushback  # grpc-retry-pushback-ms as received (the policy reads it)

    def __repr__(self) -> str:
        return f"Failure({self.status}, {self.outcome.value}, reason={self.reason})"


class Attempt:
    """One upstream stream of a call."""

    __slots__ = (
        "address",
        "ended",
        "failure",
        "finished",
        "host",
        "leg",
        "number",
        "open",
        "pending",
        "queued",
        "resp_limit",
        "sid",
        "span_id",
        "started",
        "up",
    )

    def __init__(self, number: int, host: Host, now: float) -> None:
        host.start(now)  # in flight on the endpoint from here to `end`
        self.number = number  # 1 for the call's first attempt
        self.host = host
        self.address = host.endpoint.address
        self.started = now
        self.open = True  # not reported yet (`end`)
        self.pending = False  # holds a `limits.max_pending` slot while it waits
        self.up: UpstreamConnection | None = None  # the pooled connection, once chosen
        self.sid = 0  # our stream on it, once opened (0 while waiting for a slot)
        self.queued: list[tuple[bytes, bool, int]] = []  # (DATA, END_STREAM, caller credit)
        self.ended = False  # the upstream ended its side (final status received)
        self.resp_limit: MessageLimit | None = None  # once response headers came
        # the stream its connection drives when that is not the call: a hedged copy's
        # leg (hedge.py); forgotten on `detach`, so the two never outlive the stream
        self.leg: UpstreamStream | None = None
        # what a trace tells of it (sidecar/tracing/spans.py), kept at no extra cost
        self.finished = 0.0  # when it was reported (`end`)
        self.failure: Failure | None = None  # how it failed, when it did
        self.span_id = b""  # its span, once a traced call sent it upstream

    # ---- the stream ----------------------------------------------------------------

    def wait(self, up: UpstreamConnection, stream: UpstreamStream) -> None:
        """Wait on `up` for its connection or a stream slot (it opens us, FIFO)."""
        self.up = up
        up.waiting.append(stream)

    def open_stream(
        self, up: UpstreamConnection, stream: UpstreamStream, block: bytes, end_stream: bool
    ) -> None:
        """Open our stream on `up` and queue the request headers."""
        self.up = up
        conn = up.conn
        sid = self.sid = conn.open_stream()
        up.calls[sid] = stream
        conn.send_headers(sid, block, end_stream)

    def send(self, stream: UpstreamStream, data: bytes, end_stream: bool, flow: int) -> int:
        """Request DATA toward the upstream. Returns the caller's window credit to give
        back now (the bytes went on), or 0: queued behind the upstream's window, its
        credit returned by `flush` (RFC 9113 §5.2: we pass flow control on, end to end)."""
        up = self.up
        assert up is not None
        queued = self.queued
        if queued:
            queued.append((data, end_stream, flow))
            return 0
        sent = up.conn.send_data(self.sid, data, end_stream)
        if sent < len(data):
            queued.append((data[sent:], end_stream, flow))
            up.blocked.add(stream)
            return 0
        return flow

    def flush(self, stream: UpstreamStream) -> int:
        """The upstream's window grew: send what waits. The caller's credit freed."""
        up = self.up
        if up is None:
            return 0
        queued = self.queued
        credit = 0
        while queued:
            data, end_stream, flow = queued[0]
            sent = up.conn.send_data(self.sid, data, end_stream)
            if sent < len(data):
                queued[0] = (data[sent:], end_stream, flow)
                return credit
            queued.pop(0)
            credit += flow
        up.blocked.discard(stream)
        return credit

    def answering(self, max_message_bytes: int) -> None:
        """Response headers came: from now on its DATA is walked for the size limit."""
        self.resp_limit = MessageLimit(max_message_bytes)

    def detach(self, stream: UpstreamStream, reset: bool) -> None:
        """Leave the connection: close our stream (`reset`: RST_STREAM(CANCEL), the
        upstream has not ended its side), or leave its queue. Idempotent."""
        up = self.up
        self.leg = None
        if up is None:
            return
        self.up = None
        up.leave(stream, self.sid, reset)
        if self.sid:
            up.kick()

    def end(self, outcome: Outcome, now: float) -> bool:
        """Report the attempt to its endpoint, once: True the first time."""
        if not self.open:
            return False
        self.open = False
        self.finished = now
        self.host.finish(outcome, now - self.started, now)
        return True

    # ---- what happened (the call decides what follows) ------------------------------

    def lost(self, target: str, why: str, connect: bool) -> Failure:
        """The connection failed under the attempt, or never connected."""
        up = self.up
        if up is not None and up.tls_failure is not None:
            # the TLS handshake failed (or the peer's identity was wrong): nothing was sent
            return self._local("tls_handshake", Outcome.CONNECT_FAILED, target, why)
        if connect:
            return self._local("connect_failed", Outcome.CONNECT_FAILED, target, why)
        return self._local("connection_lost", Outcome.UNAVAILABLE, target, why)

    def refused(self, target: str, why: str) -> Failure:
        """The peer says it never processed the stream (REFUSED_STREAM, or past a
        GOAWAY's last stream id: RFC 9113 §8.7): always safe to replay."""
        return self._local("connection_lost", Outcome.UNAVAILABLE, target, why)

    def timed_out(self, target: str) -> Failure:
        """Our timer ran out while the attempt waited on the endpoint."""
        message = f"{EXPLAIN['timeout']} {target} at {self.address}"
        failure = self.failure = Failure("DEADLINE_EXCEEDED", Outcome.TIMEOUT, "timeout", message)
        return failure

    def rejected(self, resp: PreparedResponse) -> Failure:
        """The upstream answered an error before any response header (trailers-only):
        nothing of it reached the caller, so another endpoint may be tried."""
        status = resp.status or "UNKNOWN"
        outcome = classify(status, resp.peer_error)
        failure = self.failure = Failure(
            status, outcome, resp.peer_error, "", resp.block, resp.pushback_ms
        )
        return failure

    def _local(self, reason: str, outcome: Outcome, target: str, why: str) -> Failure:
        message = f"{EXPLAIN[reason]} {target} at {self.address}: {why}"
        failure = self.failure = Failure("UNAVAILABLE", outcome, reason, message)
        return failure

    def __repr__(self) -> str:
        state = "open" if self.open else "reported"
        return f"Attempt(#{self.number} {self.address} stream={self.sid} {state})"
