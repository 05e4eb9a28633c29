"""The request bytes a call keeps: for a replay on another endpoint, or until sent.

Pure (no I/O). A call may be retried only while the whole request is still in hand
(gRPC's A6: a retry replays the request from the start; Envoy's router buffers it up to
a limit the same way). So DATA that went upstream is kept as a copy up to `limit` bytes
(`retries.buffer_bytes`); past that the call is no longer replayable and the copy goes.
DATA that arrives while no upstream stream is open (admission, connecting, a backoff
between attempts) is held whatever its size, since it has not been sent yet, and the
caller's flow-control window for it is credited only once it goes upstream
(`release_credit`): a caller cannot outrun the upstream through us (RFC 9113 §5.2).
"""

from __future__ import annotations


class ReplayBuffer:
    """Held request DATA, the caller's window credit not yet returned, and whether the
    request can still be replayed."""

    __slots__ = ("chunks", "credit", "limit", "replayable", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit  # bytes kept for a replay at most
        self.chunks: list[bytes] = []
        self.size = 0  # bytes in `chunks`
        self.credit = 0  # caller's window not yet credited for held (unsent) bytes
        self.replayable = True

    def keep(self, data: bytes) -> None:
        """`data` went upstream: keep a copy for a replay while within the limit."""
        if not self.replayable:
            return
        if self.size + len(data) <= self.limit:
            self.chunks.append(data)
            self.size += len(data)
        else:
            self.give_up()

    def hold(self, data: bytes, flow: int) -> None:
        """`data` arrived while no upstream stream is open: hold it until one is, with
        its window credit (`flow`). Held bytes beyond the limit end replayability."""
        self.chunks.append(data)
        self.size += len(data)
        self.credit += flow
        if self.size > self.limit:
            self.replayable = False

    def replay(self) -> list[bytes]:
        """The chunks to send on a new upstream stream, in order. When the request can
        no longer be replayed this is the last time they are needed: they are dropped."""
        chunks = self.chunks
        if not self.replayable:
            self.chunks = []
        return chunks

    def release_credit(self) -> int:
        """The window credit owed to the caller for the held bytes (now sent or read)."""
        credit = self.credit
        self.credit = 0
        return credit

    def give_up(self) -> None:
        """No replay can happen any more (the response began, or the limit was passed)."""
        self.replayable = False
        self.chunks = []

    def body(self) -> bytes:
        """The request as held (a call the sidecar answers itself reads it whole)."""
        return b"".join(self.chunks)

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer({len(self.chunks)} chunks, {self.size}/{self.limit} bytes, "
            f"credit={self.credit}, replayable={self.replayable})"
        )
