"""The in-process client's one HTTP/2 connection to its own outbound relay listener.

Does I/O on the event loop only: no socket. A sidecar's outbound listener accepts the
app's connection and serves each stream on it with a relay `Call` (sidecar/h2relay).
The in-process client does the same without the socket: `Link` connects an HTTP/2
client connection (`UpstreamConnection`, the very class the pool dials endpoints with) to a
`Downstream` of the client's `Plane` through an in-memory transport pair
(sidecar/h2relay/memory.py), and each call of the app is a gRPC client stream on it
(sidecar/h2relay/grpc_client.py). From the `Downstream` on, a call is exactly a
sidecar's outbound call: route, deadline, limits, faults, attempts, retries, per-try
timeouts, metrics, and its errors worded with `x-sidecar-error`.
"""

from __future__ import annotations

from sidecar.endpoint import Endpoint
from sidecar.h2relay.connection import Settings
from sidecar.h2relay.grpc_client import (
    Answer,
    ClientStream,
    frame,
    local_answer,
    request_block,
    request_head,
)
from sidecar.h2relay.memory import MemoryTransport, memory_pair
from sidecar.h2relay.plane import Downstream, Plane
from sidecar.h2relay.pool import Pool, UpstreamConnection
from sidecar.metadata import Pairs
from sidecar.tracing.app_context import join_app_trace

# The app's side of the pair. Its connection window is all but unbounded: streams are
# flow-controlled one by one (a slow reader holds back its own stream's credit), so
# one stalled stream must not use up a window the other calls share.
_SETTINGS = Settings(connection_window=1 << 30)
_PEER = Endpoint("127.0.0.1", 0)  # what the connection is "to": the relay, in memory


class Link:
    """Opens the app's calls as streams on the connection to `plane`; a new connection
    once the last one is gone."""

    def __init__(self, plane: Plane, authority: str, max_message_bytes: int) -> None:
        self.plane = plane
        self.loop = plane.loop
        self.authority = authority  # the upstream's name, as a sidecar would be dialled
        self.limit = max_message_bytes
        self.pool = Pool(_SETTINGS)  # holds nothing: the connection's settings and loop
        self.conn: UpstreamConnection | None = None
        self.transport: MemoryTransport | None = None
        self.closed = False
        self._heads: dict[str, bytes] = {}  # method -> its encoded fixed fields

    def head(self, method: str) -> bytes:
        head = self._heads.get(method)
        if head is None:
            head = request_head(method, self.authority)
            if len(self._heads) < 10_000:
                self._heads[method] = head
        return head

    def connection(self) -> UpstreamConnection:
        conn = self.conn
        if conn is None or conn.closed or not conn.open_for_calls:
            conn = self.conn = UpstreamConnection(self.pool, _PEER)
            self.transport = memory_pair(self.loop, conn, Downstream(self.plane))[0]
        return conn

    def open(
        self,
        head: bytes,
        metadata: Pairs,
        timeout_s: float | None,
        *,
        unary: bool,
        request: bytes | None = None,
    ) -> ClientStream | Answer:
        """A call's stream, opened (with its one request message and END_STREAM when
        `request` is given); or the answer to a call that cannot be sent at all."""
        if self.closed:
            return local_answer("UNAVAILABLE", "the in-process channel is closed", "closed")
        if self.plane.tracer is not None:
            metadata = join_app_trace(metadata)  # the app's current span, if it has one
        try:
            block = request_block(head, metadata, timeout_s)
        except ValueError as exc:
            return local_answer("INTERNAL", f"request metadata not sendable: {exc}",
                                "bad_metadata")  # fmt: skip
        if request is not None and len(request) > self.limit:
            return local_answer(
                "RESOURCE_EXHAUSTED",
                f"request message over max_message_bytes ({len(request)} > {self.limit})",
                "message_too_large",
            )
        stream = ClientStream(self.loop, block, self.limit, unary=unary)
        if request is not None:
            stream.send(frame(request), True)
        stream.start(self.connection())
        return stream

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.conn = None
