"""A caller's request stream, kept so a retry can send it again.

Does no I/O of its own, but reads the caller's stream (grpc.aio) on the pipeline's
behalf. Every message read is appended to a `ReplayBuffer` (sidecar/retry/buffer.py)
before it goes upstream; `replay()` gives each attempt the buffered messages first and
then the rest of the caller's stream as it arrives. Past `retries.buffer_bytes` the
buffer gives up and the call loses its right to a retry (`replayable` is False).

Why each read runs in its own task, shielded: an attempt that fails is torn down by
cancelling its pump (sidecar/proxy/forward.py) while the pump may be waiting for the
caller's next message. Cancelling grpcio's read itself would lose that message; the
shielded read survives, and the next attempt's `replay()` picks it up. Only calls on
an upstream with retries configured pay for this (one small task per message).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sidecar.retry import ReplayBuffer


async def _next_or_none(source: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await source.__anext__()
    except StopAsyncIteration:
        return None


class RequestStream:
    __slots__ = ("_done", "_next", "_source", "buffer")

    def __init__(self, source: Any, cap_bytes: int) -> None:
        self._source: AsyncIterator[bytes] = source.__aiter__()
        self.buffer = ReplayBuffer(cap_bytes)
        self._next: asyncio.Future[bytes | None] | None = None
        self._done = False

    @property
    def replayable(self) -> bool:
        """Could another attempt still be given the whole stream so far?"""
        return self.buffer.replayable

    async def _pull(self) -> bytes | None:
        if self._done:
            return None
        if self._next is None:
            self._next = asyncio.ensure_future(_next_or_none(self._source))
        pending = self._next
        try:
            message = await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.done():  # the read itself was cancelled, not just our wait
                self._next = None
            raise
        except BaseException:
            self._next = None  # the caller's stream broke: nothing more will come
            raise
        self._next = None
        if message is None:
            self._done = True
            return None
        self.buffer.append(message)
        return message

    async def replay(self) -> AsyncIterator[bytes]:
        """The stream for one attempt: what was read so far, then the rest."""
        for message in self.buffer.messages if self.buffer.replayable else ():
            yield message
        while (more := await self._pull()) is not None:
            yield more

    def close(self) -> None:
        """The call is over: stop reading the caller's stream."""
        if self._next is not None:
            self._next.cancel()
            self._next = None
