"""An in-memory pair of HTTP/2 connections: a gRPC caller talking to a relay listener.

Does I/O only on the event loop (sidecar/h2relay/memory.py's transport pair, no
socket). `h2_pair(plane)` connects the relay's own HTTP/2 client connection (the one
the pool dials endpoints with, and the in-process client's, sidecar/client/link.py)
to a caller's connection of `plane` (its server side, exactly as a socket caller's),
and `call()` opens one gRPC call on it (sidecar/h2relay/grpc_client.py's
`ClientStream`: send, end, cancel with RST_STREAM(CANCEL), and `ended`, the answer).
"""

from __future__ import annotations

from sidecar.endpoint import Endpoint
from sidecar.h2relay.connection import Settings
from sidecar.h2relay.grpc_client import ClientStream, frame, request_block, request_head
from sidecar.h2relay.memory import MemoryTransport, memory_pair
from sidecar.h2relay.plane import Downstream, Plane
from sidecar.h2relay.pool import Pool, UpstreamConnection
from sidecar.metadata import Pairs

_PEER = Endpoint("127.0.0.1", 0)  # what the client connection is "to": the plane, in memory


class H2Pair:
    """A caller's connection to `plane`: `client` is the caller's end (client role),
    `server` the plane's (its `Downstream`, which starts a relay Call per stream)."""

    def __init__(self, plane: Plane, authority: str = "fake", settings: Settings | None = None):
        self.plane = plane
        self.authority = authority
        self.loop = plane.loop
        self.pool = Pool(settings or Settings(connection_window=1 << 30), clock=plane.clock)
        self.client = UpstreamConnection(self.pool, _PEER)
        self.server = Downstream(plane)
        self.transport: MemoryTransport = memory_pair(self.loop, self.client, self.server)[0]

    def call(
        self,
        method: str,
        *messages: bytes,
        timeout_s: float | None = None,
        metadata: Pairs = (),
        end: bool = True,
        unary: bool = True,
    ) -> ClientStream:
        """Open a call: its headers (with `grpc-timeout` when `timeout_s` is given), then
        `messages`, each framed, and END_STREAM unless `end` is False (send more with
        `stream.send(frame(m))`, end with `stream.end_request()`)."""
        block = request_block(request_head(method, self.authority), metadata, timeout_s)
        stream = ClientStream(self.loop, block, 1 << 30, unary=unary)
        for i, message in enumerate(messages):
            stream.send(frame(message), end and i == len(messages) - 1)
        if end and not messages:
            stream.end_request()
        stream.start(self.client)
        return stream

    def close(self) -> None:
        """Close both ends (what was written is delivered first)."""
        self.transport.close()


def h2_pair(plane: Plane, authority: str = "fake") -> H2Pair:
    """A caller connected to `plane` in memory (see the module's docstring)."""
    return H2Pair(plane, authority)
