"""One attempt: carry a call's raw bytes to one endpoint and its answer back, per RPC kind.

Does I/O (grpc.aio). Messages stay opaque bytes (no (de)serialisers anywhere). Rules
learnt the hard way (FACTS.md): a non-OK status arrives as AioRpcError (also from
`call.read()`), response headers must be forwarded explicitly, and a caller's cancel
reaches a streaming upstream call only if we cancel it ourselves.

Unary-response kinds (unary, client-streaming) send nothing to the caller here: the
pipeline delivers the answer, so such an attempt stays uncommitted and retryable.
Streaming responses are relayed as they arrive, and the attempt is committed from the
first non-empty header or the first message sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from sidecar.proxy.channels import PooledChannel
from sidecar.proxy.headers import Pairs, forwardable


class Caller(Protocol):
    """Who made the call, as the pipeline sees it: a grpcio server context on the
    sidecar's listeners, or the in-process client's call (sidecar/client/call.py)."""

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline, None without one."""

    def invocation_metadata(self) -> Any:
        """The caller's request metadata, (key, value) pairs."""

    async def send_initial_metadata(self, metadata: Any) -> None:
        """Response headers of a streamed response, before its first message."""

    async def write(self, message: Any) -> None:
        """One response message of a streamed response (raw bytes)."""


@dataclass(slots=True)
class Answer:
    """What came back from one attempt (metadata already stripped of hop-by-hop keys)."""

    code: grpc.StatusCode
    details: str
    headers: Pairs
    trailers: Pairs
    response: bytes | None = None  # unary-response kinds, when OK
    committed: bool = False  # headers or messages already went to the caller
    local_reason: str | None = None  # set when this sidecar made the error (x-sidecar-error)
    unread: Any = None  # an OK unary answer's upstream call: headers and trailers not read

    async def complete(self) -> Answer:
        """Read the headers and trailers an OK unary answer left with its upstream call
        (most callers never look at them: the in-process client reads them on demand)."""
        call = self.unread
        if call is not None:
            self.unread = None
            self.headers = forwardable(await call.initial_metadata())
            self.trailers = forwardable(await call.trailing_metadata())
        return self


async def forward(
    kind: str,
    pooled: PooledChannel,
    method: str,
    request: Any,
    context: Caller,
    metadata: Pairs,
    timeout_s: float | None,
) -> Answer:
    """Run one attempt of `kind`; `request` is bytes or the caller's request iterator."""
    stub = pooled.stub(method, kind)
    streams_in = kind in ("client_stream", "bidi")
    if streams_in:
        call = stub(timeout=timeout_s, metadata=metadata)
    else:
        call = stub(request, timeout=timeout_s, metadata=metadata)
    pump = _pump(request, call) if streams_in else None
    answer = Answer(grpc.StatusCode.UNKNOWN, "", (), ())
    try:
        if kind in ("unary", "client_stream"):
            answer.response = await call  # returns only with status OK (else raises)
            answer.code = grpc.StatusCode.OK
            answer.unread = call  # its metadata: read by `Answer.complete()` when wanted
        else:
            await _relay(call, context, answer)
            answer.trailers = forwardable(await call.trailing_metadata())
            answer.code = await call.code()
            answer.details = await call.details() or ""
    except grpc.aio.AioRpcError as err:
        answer.code = err.code()
        answer.details = err.details() or ""
        answer.headers = answer.headers or forwardable(err.initial_metadata())
        answer.trailers = forwardable(err.trailing_metadata())
        answer.response = None
    except BaseException:
        # the caller cancelled (or we failed): the upstream must hear of it
        call.cancel()
        raise
    finally:
        if pump is not None:
            pump.cancel()
    return answer


async def _relay(call: Any, context: Caller, answer: Answer) -> None:
    """Stream the upstream's headers and messages to the caller as they arrive."""
    headers = forwardable(await call.initial_metadata())
    answer.headers = headers
    # Empty headers say nothing, and are held back until the first message (which
    # sends them): a trailers-only failure may report its empty headers just before the
    # call is done, and committing on them would forbid a safe retry.
    if headers:
        await context.send_initial_metadata(headers)
        answer.committed = True
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        await context.write(message)
        answer.committed = True


def _pump(requests: AsyncIterator[bytes], call: Any) -> asyncio.Task[None]:
    """Copy the caller's request stream upstream, then half-close (flow control applies)."""

    async def run() -> None:
        try:
            async for message in requests:
                await call.write(message)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the upstream call already ended: its status is what the caller gets
        except Exception:
            call.cancel()  # the caller's stream broke: nothing more will come

    return asyncio.get_running_loop().create_task(run())
