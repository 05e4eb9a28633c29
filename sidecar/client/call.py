"""The in-process client's call objects: what a generated stub gets back from a call.

Does I/O (runs the pipeline as an asyncio task). Each call has a `_Sink`, the
pipeline's `Caller` (sidecar/proxy/forward.py): it tells the pipeline the deadline
(the caller's own `timeout=`) and metadata, and receives a streamed response's
headers and messages as the pipeline relays them. Messages are serialised before the
pipeline and deserialised after it, so the pipeline sees raw bytes exactly as on the
sidecar's listeners.

They follow grpc.aio's call API as far as generated stubs and their callers use it:
awaiting a unary-response call gives the response or raises `grpc.aio.AioRpcError`;
a streamed response is read by `read()` (EOF at the end, the error raised instead of
EOF on a non-OK status, as grpcio does) or `async for`; a request stream comes from
the iterator given to the stub or from `write()` + `done_writing()`; `cancel()`
cancels the pipeline, and through it the attempt in flight.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from typing import Any

import grpc

from sidecar.proxy.forward import Answer
from sidecar.proxy.headers import Pairs

Serializer = Callable[[Any], bytes] | None
Deserializer = Callable[[bytes], Any] | None
# runs one call through the pipeline: (request, caller) -> Answer
Runner = Callable[[Any, "_Sink"], Coroutine[Any, Any, Answer]]

_CANCELLED = Answer(grpc.StatusCode.CANCELLED, "Locally cancelled by application!", (), ())
_DONE_WRITING = object()
_HIGH_WATER = 32  # streamed responses buffered before the relay waits for the reader


def _metadata(pairs: Pairs) -> grpc.aio.Metadata:
    return grpc.aio.Metadata(*pairs)


def _pairs(metadata: Any) -> Pairs:
    if not metadata:
        return ()
    return tuple((str(k), v) for k, v in metadata)


class _Unstarted:
    """Unary-response calls made on one loop and not yet awaited. The next loop turn
    starts whichever of them nobody awaited meanwhile: one callback per turn for all
    of them, instead of one scheduled callback per call (~5 us of ~20 us per call)."""

    __slots__ = ("_calls", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: list[UnaryResponseCall] = []

    def add(self, call: UnaryResponseCall) -> None:
        if not self._calls:
            self.loop.call_soon(self._start)
        self._calls.append(call)

    def _start(self) -> None:
        calls, self._calls = self._calls, []
        for call in calls:
            call._start_if_idle()


_this_thread = threading.local()  # .unstarted: the _Unstarted of this thread's loop


def _unstarted() -> _Unstarted:
    loop = asyncio.get_running_loop()
    unstarted: _Unstarted | None = getattr(_this_thread, "unstarted", None)
    if unstarted is None or unstarted.loop is not loop:
        unstarted = _this_thread.unstarted = _Unstarted(loop)
    return unstarted


class _Sink:
    """The pipeline's view of an in-process call (sidecar.proxy.forward.Caller).

    Only a streamed response's sink holds its call (to relay into it). A unary-response
    call gets its answer whole, and its sink holds nothing back: no reference cycle, so
    the call and all it holds are freed as soon as the caller drops them, without
    waiting for the garbage collector (whose passes cost ~10-20 us per call otherwise).
    """

    __slots__ = ("_call", "_deadline", "_metadata")

    def __init__(self, call: Call | None, deadline: float | None, metadata: Pairs) -> None:
        self._call = call
        self._deadline = deadline
        self._metadata = metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def invocation_metadata(self) -> Pairs:
        return self._metadata

    async def send_initial_metadata(self, metadata: Any) -> None:
        if self._call is None:
            raise RuntimeError("a unary response is delivered with the pipeline's answer")
        self._call._set_headers(_pairs(metadata))

    async def write(self, message: Any) -> None:
        if self._call is None:
            raise RuntimeError("a unary response is delivered with the pipeline's answer")
        await self._call._relayed(message)


class Call:
    """One RPC of any kind; subclasses add what their kind's callers use."""

    def __init__(
        self,
        run: Runner,
        request: Any,
        timeout: float | None,
        metadata: Any,
        deserialize: Deserializer,
    ) -> None:
        self._deserialize = deserialize
        self._headers: asyncio.Future[Pairs] | None = None
        deadline = None if timeout is None else time.monotonic() + timeout
        self._sink = _Sink(self if self._relays else None, deadline, _pairs(metadata))
        self._task: asyncio.Future[Answer] | None = self._launch(run(request, self._sink))

    _relays = False  # does the pipeline relay a streamed response into this call?

    async def _relayed(self, message: bytes) -> None:
        raise NotImplementedError  # only StreamResponseCall's sink points at its call

    def _launch(self, run: Coroutine[Any, Any, Answer]) -> asyncio.Future[Answer] | None:
        """Start the pipeline: as a task of its own (streamed responses need one)."""
        return asyncio.get_running_loop().create_task(run)

    def _set_headers(self, headers: Pairs) -> None:
        if self._headers is not None and not self._headers.done():
            self._headers.set_result(headers)

    # -- the caller's side (grpc.aio.Call) ----------------------------------------

    def _future(self) -> asyncio.Future[Answer]:
        """The call's task (a streamed call has one from the start)."""
        assert self._task is not None
        return self._task

    async def _answer(self) -> Answer:
        task = self._future()
        if task.cancelled():
            return _CANCELLED
        if not task.done():
            # Awaiting the task directly: a cancelled awaiting coroutine cancels the RPC
            # too, as with grpc.aio.
            try:
                return await task
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling():  # our caller's own cancel
                    raise
                return _CANCELLED  # call.cancel()
        return task.result()

    def _error(self, answer: Answer) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            answer.code, _metadata(answer.headers), _metadata(answer.trailers), answer.details
        )

    def cancel(self) -> bool:
        return self._future().cancel()

    def cancelled(self) -> bool:
        return self._future().cancelled()

    def done(self) -> bool:
        return self._future().done()

    def time_remaining(self) -> float | None:
        return self._sink.time_remaining()

    def add_done_callback(self, callback: Callable[[Call], None]) -> None:
        self._future().add_done_callback(lambda _t: callback(self))

    async def initial_metadata(self) -> grpc.aio.Metadata:
        if self._headers is not None:
            if not self._headers.done():
                waiter: asyncio.Future[Any] = asyncio.ensure_future(self._answer())
                headers: asyncio.Future[Any] = self._headers
                await asyncio.wait({waiter, headers}, return_when=asyncio.FIRST_COMPLETED)
                if not self._headers.done():
                    return _metadata((await waiter).headers)
                waiter.cancel()
            return _metadata(self._headers.result())
        answer = await (await self._answer()).complete()
        return _metadata(answer.headers)

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        answer = await (await self._answer()).complete()
        return _metadata(answer.trailers)

    async def code(self) -> grpc.StatusCode:
        return (await self._answer()).code

    async def details(self) -> str:
        return (await self._answer()).details

    async def debug_error_string(self) -> str:
        return ""

    async def wait_for_connection(self) -> None:
        return None


class UnaryResponseCall(Call):
    """Unary and client-streaming calls: `await call` is the response.

    The common use, `await stub.Method(request)`, runs the pipeline inside the awaiting
    task: no task of its own, no extra loop turn per call. Used any other way first
    (or not awaited by the next loop turn: grpc.aio starts a call at once, awaited or
    not) the call starts as a task of its own, as a streamed call always does.
    """

    _task: asyncio.Future[Answer] | None

    def _launch(self, run: Coroutine[Any, Any, Answer]) -> asyncio.Future[Answer] | None:
        self._idle: Coroutine[Any, Any, Answer] | None = run  # not started yet
        self._inline: asyncio.Task[Any] | None = None  # the awaiting task running it
        self._result: Answer | None = None  # the answer, once it ran inline
        self._cancelled = False  # cancel() ended it before it ran, or while inline
        _unstarted().add(self)
        return None

    def _start_if_idle(self) -> None:
        if self._idle is not None:
            self._future()

    def _future(self) -> asyncio.Future[Answer]:
        """The answer to wait on: the call's task, started now if nobody runs it yet,
        or (running inline) a future that `_ran` resolves."""
        if self._task is None:
            loop = asyncio.get_running_loop()
            run, self._idle = self._idle, None
            if run is not None:
                self._task = loop.create_task(run)
            else:
                self._task = loop.create_future()
                if self._result is not None:
                    self._task.set_result(self._result)
        return self._task

    def _ran(self, answer: Answer) -> Answer:
        self._result = answer
        waiting = self._task
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)
        return answer

    async def _run_inline(self, run: Coroutine[Any, Any, Answer]) -> Answer:
        me = asyncio.current_task()
        self._inline = me
        try:
            return self._ran(await run)
        except asyncio.CancelledError:
            if not self._cancelled or me is None:
                self._ran(_CANCELLED)
                raise  # our caller's own cancel (the pipeline cancelled the attempt)
            me.uncancel()  # call.cancel(): the caller gets CANCELLED, as with grpc.aio
            return self._ran(_CANCELLED)
        finally:
            self._inline = None

    async def _answer(self) -> Answer:
        if self._result is not None:
            return self._result
        task = self._future()
        if isinstance(task, asyncio.Task):
            return await super()._answer()
        return await asyncio.shield(task)  # a waiter's cancel must not cancel the answer

    def __await__(self) -> Generator[Any, None, Any]:
        run = self._idle
        if run is not None:
            self._idle = None
            answer = yield from self._run_inline(run).__await__()
        else:
            answer = yield from self._answer().__await__()
        if answer.code is not grpc.StatusCode.OK:
            raise self._error(answer)
        response = answer.response
        return response if self._deserialize is None else self._deserialize(response or b"")

    def cancel(self) -> bool:
        if self.done():
            return False
        run, self._idle = self._idle, None
        if run is not None:  # never started: it never will
            run.close()
            self._cancelled = True
            self._ran(_CANCELLED)
            return True
        if self._inline is not None:
            self._cancelled = True
            return self._inline.cancel()
        return self._future().cancel()

    def cancelled(self) -> bool:
        if self._cancelled:
            return True
        return self._task is not None and self._task.cancelled()

    def done(self) -> bool:
        return self._result is not None or (self._task is not None and self._task.done())

    def add_done_callback(self, callback: Callable[[Call], None]) -> None:
        self._future().add_done_callback(lambda _t: callback(self))


class StreamResponseCall(Call):
    """Server-streaming and bidi calls: `read()` / `async for`."""

    _relays = True

    def _launch(self, run: Coroutine[Any, Any, Answer]) -> asyncio.Future[Answer] | None:
        loop = asyncio.get_running_loop()
        self._items: collections.deque[bytes] = collections.deque()
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False
        self._headers = loop.create_future()
        task = loop.create_task(run)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Future[Answer]) -> None:
        self._ended = True
        self._readable.set()
        if self._headers is not None and not self._headers.done():
            headers = () if task.cancelled() or task.exception() else task.result().headers
            self._headers.set_result(headers)

    async def _relayed(self, message: bytes) -> None:
        """The pipeline relays one response message (backpressure: the reader's pace)."""
        self._set_headers(())  # empty headers were held back until the first message
        self._items.append(message)
        self._readable.set()
        if len(self._items) >= _HIGH_WATER:
            self._room.clear()
            await self._room.wait()

    async def read(self) -> Any:
        while not self._items:
            if self._ended:
                answer = await self._answer()
                if answer.code is not grpc.StatusCode.OK:
                    raise self._error(answer)
                return grpc.aio.EOF
            self._readable.clear()
            await self._readable.wait()
        message = self._items.popleft()
        if len(self._items) < _HIGH_WATER // 2:
            self._room.set()
        return message if self._deserialize is None else self._deserialize(message)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            message = await self.read()
            if message is grpc.aio.EOF:
                return
            yield message


class RequestStream:
    """A call's request messages as the pipeline reads them: serialised bytes, from the
    stub's iterator (sync or async) or from `write()` until `done_writing()`."""

    def __init__(self, source: Any, serialize: Serializer) -> None:
        self._source = source
        self._serialize = serialize
        self._queue: asyncio.Queue[Any] | None = asyncio.Queue() if source is None else None

    async def write(self, message: Any) -> None:
        if self._queue is None:
            raise asyncio.InvalidStateError("requests come from the iterator given to the call")
        await self._queue.put(message)

    async def done_writing(self) -> None:
        if self._queue is not None:
            await self._queue.put(_DONE_WRITING)

    def _bytes(self, message: Any) -> bytes:
        return message if self._serialize is None else self._serialize(message)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[bytes]:
        if self._queue is not None:
            while (message := await self._queue.get()) is not _DONE_WRITING:
                yield self._bytes(message)
        elif hasattr(self._source, "__aiter__"):
            async for message in self._source:
                yield self._bytes(message)
        else:
            for message in self._source:
                yield self._bytes(message)


class UnaryStreamCall(StreamResponseCall):
    """Server streaming."""


class _SendsStream(Call):
    """What a call with a request stream adds: requests from the stub's iterator, or
    `write()` until `done_writing()`."""

    def __init__(
        self, run: Runner, requests: RequestStream, timeout: float | None, metadata: Any,
        deserialize: Deserializer,
    ) -> None:  # fmt: skip
        self._requests = requests
        super().__init__(run, requests, timeout, metadata, deserialize)

    async def write(self, message: Any) -> None:
        await self._requests.write(message)

    async def done_writing(self) -> None:
        await self._requests.done_writing()


class StreamUnaryCall(_SendsStream, UnaryResponseCall):
    """Client streaming."""


class StreamStreamCall(_SendsStream, StreamResponseCall):
    """Bidi: requests as for StreamUnaryCall, responses as for UnaryStreamCall."""
