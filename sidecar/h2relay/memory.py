"""Two connected in-memory transports: a socket pair without the kernel.

Does I/O only on the event loop (callbacks, no sockets). `memory_pair(loop, a, b)`
connects two asyncio protocols as a socket pair would: bytes one side writes reach the
other side's `data_received`, in order, on a later loop turn (never from inside the
writer's `write`, so a protocol is not re-entered while it writes); everything written
in one turn is delivered as one chunk. `close()` delivers what was written first, then
`connection_lost(None)` on both sides; `abort()` drops what was not delivered. The
in-process client connects its HTTP/2 client connection to an outbound relay listener
this way (sidecar/client/channel.py): the same `Downstream` as a socket caller's, with
no socket and no system call per write.
"""

from __future__ import annotations

import asyncio
from typing import Any

# what get_extra_info answers for peername/sockname: a loopback address, port 0
LOOPBACK = ("127.0.0.1", 0)


class MemoryTransport(asyncio.Transport):
    """One end of a pair (see `memory_pair`). Reading may be paused: deliveries wait."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._peer: MemoryTransport | None = None
        self._incoming: list[bytes] = []  # written by the peer, not delivered yet
        self._scheduled = False
        self._paused = False
        self._closing = False
        self._lost = False

    # ---- writing (toward the peer) ---------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        peer = self._peer
        if self._closing or peer is None or peer._lost or not data:
            return
        peer._incoming.append(bytes(data))
        peer._schedule()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("HTTP/2 ends streams, not the connection's write side")

    def get_write_buffer_size(self) -> int:
        return 0  # delivered on the next loop turn, whatever the size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    # ---- reading (from the peer) -----------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and not self._paused:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        if self._lost or self._paused or not self._incoming:
            return
        chunks, self._incoming = self._incoming, []
        self._protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._incoming:
                self._schedule()

    def is_reading(self) -> bool:
        return not self._paused and not self._lost

    # ---- ending ----------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close both ends: what was written is delivered first, then both lose the
        connection (a peer closing a socket: EOF after the data)."""
        if self._closing:
            return
        self._closing = True
        peer = self._peer
        if peer is not None:
            peer._closing = True
        # after any delivery already scheduled for this turn
        self._loop.call_soon(self._end, None)

    def abort(self) -> None:
        """Close both ends at once; undelivered bytes are dropped."""
        self._closing = True
        self._incoming = []
        peer = self._peer
        if peer is not None:
            peer._closing = True
            peer._incoming = []
        self._end(ConnectionResetError("in-memory connection aborted"))

    def _end(self, exc: Exception | None) -> None:
        peer = self._peer
        if peer is not None and not peer._lost:
            peer._deliver_all()
            peer._lost = True
            peer._loop.call_soon(peer._protocol.connection_lost, exc)
        if not self._lost:
            self._deliver_all()
            self._lost = True
            self._loop.call_soon(self._protocol.connection_lost, exc)

    def _deliver_all(self) -> None:
        if self._incoming and not self._lost:
            chunks, self._incoming = self._incoming, []
            self._protocol.data_received(b"".join(chunks))

    # ---- about the connection --------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return LOOPBACK
        return default

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<MemoryTransport {state} {len(self._incoming)} chunks waiting>"


def memory_pair(
    loop: asyncio.AbstractEventLoop, a: asyncio.Protocol, b: asyncio.Protocol
) -> tuple[MemoryTransport, MemoryTransport]:
    """Connect protocols `a` and `b`; both see `connection_made` before this returns
    (`a` first, as a client's connect completes before the server's first read)."""
    ta = MemoryTransport(loop, a)
    tb = MemoryTransport(loop, b)
    ta._peer = tb
    tb._peer = ta
    a.connection_made(ta)
    b.connection_made(tb)
    return ta, tb
