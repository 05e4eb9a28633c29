"""A caller's request stream, kept so a retry can send it again.

Does no I/O of its own, but reads the caller's stream (grpc.aio) on the pipeline's
behalf. Every message read is kept (up to `retries.buffer_bytes`) before it goes
upstream; `replay()` gives an
attempt the kept messages first and then the rest of the caller's stream as it
arrives. Past the cap the call loses its right to a retry (`replayable` is False) and
messages are let go as soon as the current attempt has taken them, so memory per call
stays bounded.

Why each read runs in its own task, shielded: an attempt that fails is torn down by
cancelling its pump (sidecar/proxy/forward.py) while the pump may be waiting for the
caller's next message. Cancelling grpcio's read itself would lose that message; the
shielded read carries on, keeps its message, and the next attempt's `replay()` finds
it. Only calls on an upstream with retries configured pay for this (one small task per
message).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class RequestStream:
    __slots__ = (
        "_base",
        "_done",
        "_items",
        "_read",
        "_source",
        "cap_bytes",
        "nbytes",
        "replayable",
    )

    def __init__(self, source: Any, cap_bytes: int) -> None:
        self._source: AsyncIterator[bytes] = source.__aiter__()
        self.cap_bytes = cap_bytes
        self.nbytes = 0
        self.replayable = True  # every message read so far is still kept
        self._items: list[bytes] = []
        self._base = 0  # stream position of _items[0] (> 0 only once not replayable)
        self._read: asyncio.Future[None] | None = None
        self._done = False

    async def _read_one(self) -> None:
        try:
            message = await self._source.__anext__()
        except StopAsyncIteration:
            self._done = True
            return
        self._items.append(message)
        self.nbytes += len(message)
        if self.nbytes > self.cap_bytes:
            self.replayable = False

    async def replay(self) -> AsyncIterator[bytes]:
        """The stream for one attempt: what was read so far, then the rest."""
        if self._base:
            raise RuntimeError("the request stream outgrew its replay buffer")
        position = 0
        while True:
            index = position - self._base
            if index < len(self._items):
                message = self._items[index]
                position += 1
                if not self.replayable:  # no later attempt will want it
                    del self._items[: position - self._base]
                    self._base = position
                yield message
            elif self._done:
                return
            else:
                if self._read is None or self._read.done():
                    self._read = asyncio.ensure_future(self._read_one())
                await asyncio.shield(self._read)

    def close(self) -> None:
        """The call is over: stop reading the caller's stream."""
        if self._read is not None and not self._read.done():
            self._read.cancel()
        self._read = None
        self._items = []
