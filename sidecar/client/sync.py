"""The in-process client for blocking code: a `grpc.Channel` over the asyncio one.

    with sidecar.client.connect_sync("playlist", "sidecar.yaml") as channel:
        stub = playlist_pb2_grpc.PlaylistStub(channel)  # generated sync stubs, unchanged
        reply = stub.Get(request, timeout=0.5)

Does I/O. Design: each `SyncChannel` owns one event-loop thread that runs the async
`Channel` (sidecar/client/channel.py), so discovery, health checks, balancing, breakers,
retries and deadlines are the very same objects and code as in the async client and the
sidecar. A call from any thread submits a coroutine to that loop and blocks on its
result; a streamed response costs one thread hand-off per message, and a request
iterator is pulled in the loop's executor so a blocking iterator cannot stall the loop.

The trade-off, chosen for size: one extra thread per channel and a hand-off
(~tens of µs) per call and per streamed message, against a second, thread-based
implementation of the call path, which would drift from the first. Calls from many
threads share the loop, as grpcio's sync calls share its completion-queue thread.
Not there: `grpc.channel_ready_future` semantics beyond "ready once discovery has
answered" (connect_sync already waited for it); `credentials`, `wait_for_ready` and
`compression` are accepted and ignored, as in the async client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from sidecar.client.channel import Channel, connect
from sidecar.config import Config
from sidecar.policy import Policies

T = TypeVar("T")
_END = object()


def connect_sync(
    upstream: str,
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    *,
    policies: Policies | None = None,
    wait_s: float | None = None,
    registry: CollectorRegistry | None = None,
) -> SyncChannel:
    """A blocking channel to `upstream`, started as `sidecar.client.connect` starts one."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_forever, name=f"sidecar-client-{upstream}", daemon=True
    )
    thread.start()
    try:
        channel = asyncio.run_coroutine_threadsafe(
            connect(upstream, config, policies=policies, wait_s=wait_s, registry=registry), loop
        ).result()
    except BaseException:
        _stop(loop, thread)
        raise
    return SyncChannel(channel, loop, thread)


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


class RpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A finished call with a non-OK status, as grpcio's sync calls raise it."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self._code: grpc.StatusCode = error.code()
        self._details: str | None = error.details()
        self._initial = tuple(error.initial_metadata())
        self._trailing = tuple(error.trailing_metadata())

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._initial

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def debug_error_string(self) -> str:
        return ""

    def __str__(self) -> str:
        return f"<RpcError {self._code.name}: {self._details!r}>"


class _BlockingCall(grpc.Call, grpc.Future):  # type: ignore[misc]
    """One call's sync face: the asyncio call runs on the loop; every accessor blocks
    on the loop for its answer. `future()` returns it; streamed responses iterate it."""

    def __init__(self, owner: SyncChannel, start: Callable[[], Any]) -> None:
        self._owner = owner

        async def begin() -> Any:
            return start()

        self._acall: Any = owner._run(begin())

    # -- grpc.Call ------------------------------------------------------------------
    def _meta(self, name: str) -> tuple[tuple[str, Any], ...]:
        # the async call answers metadata for failed and cancelled calls too
        return tuple(self._owner._run(getattr(self._acall, name)()))

    def initial_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._meta("initial_metadata")

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._meta("trailing_metadata")

    def code(self) -> grpc.StatusCode:
        code: grpc.StatusCode = self._owner._run(self._acall.code())
        return code

    def details(self) -> str:
        details: str = self._owner._run(self._acall.details())
        return details

    def is_active(self) -> bool:
        return not self._acall.done()

    def time_remaining(self) -> float | None:
        remaining: float | None = self._acall.time_remaining()
        return remaining

    def cancel(self) -> bool:
        if self._acall.done():
            return False
        self._owner._loop.call_soon_threadsafe(self._acall.cancel)
        return True

    def _on_done(self, fn: Callable[[], None]) -> None:
        # Registered on the loop (asyncio is not thread-safe); run in the loop's executor,
        # as grpcio runs callbacks on a thread of its own, so a callback may block on
        # this call (`f.result()`) without deadlocking the loop.
        loop = self._owner._loop

        def done(_call: Any) -> None:
            loop.run_in_executor(None, fn)

        loop.call_soon_threadsafe(self._acall.add_done_callback, done)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._on_done(callback)
        return True

    # -- grpc.Future (unary responses) ------------------------------------------------
    def cancelled(self) -> bool:
        return bool(self._acall.cancelled())

    def running(self) -> bool:
        return not self._acall.done()

    def done(self) -> bool:
        return bool(self._acall.done())

    def result(self, timeout: float | None = None) -> Any:
        async def response() -> Any:
            return await self._acall

        future = asyncio.run_coroutine_threadsafe(response(), self._owner._loop)
        return self._owner._wait(future, timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except RpcError as error:
            return error
        return None

    def traceback(self, timeout: float | None = None) -> Any:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._on_done(lambda: fn(self))

    # -- iterator (streamed responses) ------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        message = self._owner._run(self._acall.read())
        if message is grpc.aio.EOF:
            raise StopIteration
        return message

    def __del__(self) -> None:
        # An abandoned stream is cancelled, as grpcio's are, rather than left holding
        # its attempt (and its backpressure) until the deadline.
        with contextlib.suppress(Exception):
            if not self._acall.done() and not self._owner._loop.is_closed():
                self._owner._loop.call_soon_threadsafe(self._acall.cancel)


def _requests(loop: asyncio.AbstractEventLoop, iterator: Any) -> AsyncIterator[Any]:
    """A sync request iterator as an async one, pulled in the loop's executor: grpcio
    consumes request iterators on a thread of its own, so callers may block in them."""
    it = iter(iterator)

    async def pull() -> AsyncIterator[Any]:
        while (message := await loop.run_in_executor(None, next, it, _END)) is not _END:
            yield message

    return pull()


class _BlockingMultiCallable:
    def __init__(self, owner: SyncChannel, acallable: Any, stream_request: bool) -> None:
        self._owner = owner
        self._acallable = acallable
        self._stream_request = stream_request

    def _start(self, request: Any, timeout: float | None, metadata: Any) -> _BlockingCall:
        if self._stream_request:
            request = _requests(self._owner._loop, request)
        return _BlockingCall(
            self._owner, lambda: self._acallable(request, timeout=timeout, metadata=metadata)
        )


class _UnaryResponse(_BlockingMultiCallable):
    """unary_unary and stream_unary: `__call__`, `with_call`, `future`."""

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        return self._start(request, timeout, metadata).result()

    def with_call(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> tuple[Any, _BlockingCall]:
        call = self._start(request, timeout, metadata)
        return call.result(), call

    def future(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> _BlockingCall:
        return self._start(request, timeout, metadata)


class _StreamResponse(_BlockingMultiCallable):
    """unary_stream and stream_stream: the call is the response iterator."""

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> _BlockingCall:
        return self._start(request, timeout, metadata)


class SyncChannel(grpc.Channel):  # type: ignore[misc]
    """Stands in for a `grpc.Channel` to one upstream; `channel.aio` is the async
    `Channel` it drives (its `upstream` holds the cluster, as for the async client)."""

    def __init__(
        self, channel: Channel, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self.aio = channel
        self._loop = loop
        self._thread = thread
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise ValueError("Cannot invoke RPC on closed channel!")  # grpcio's words
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self._loop), None)

    def _wait(self, future: concurrent.futures.Future[T], timeout: float | None) -> T:
        if threading.current_thread() is self._thread:
            future.cancel()
            raise RuntimeError("a blocking call from the client's own event-loop thread")
        try:
            return future.result(timeout)
        except grpc.aio.AioRpcError as error:
            raise RpcError(error) from None
        except concurrent.futures.CancelledError:
            raise RpcError(
                grpc.aio.AioRpcError(
                    grpc.StatusCode.CANCELLED,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    "Locally cancelled by application!",
                )
            ) from None
        except BaseException:  # KeyboardInterrupt, a result() timeout: stop the call too
            future.cancel()
            raise

    @property
    def upstream(self) -> Any:
        return self.aio.upstream

    def reload(
        self, config: Config | str | os.PathLike[str] | Mapping[str, Any] | None = None
    ) -> Any:
        """`Channel.reload` from blocking code: the `ReloadResult`."""
        return self._run(self.aio.reload(config))

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, _registered_method: Any = False,
                    ) -> _UnaryResponse:  # fmt: skip
        acallable = self.aio.unary_unary(method, request_serializer, response_deserializer)
        return _UnaryResponse(self, acallable, stream_request=False)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: Any = False,
                     ) -> _StreamResponse:  # fmt: skip
        acallable = self.aio.unary_stream(method, request_serializer, response_deserializer)
        return _StreamResponse(self, acallable, stream_request=False)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: Any = False,
                     ) -> _UnaryResponse:  # fmt: skip
        acallable = self.aio.stream_unary(method, request_serializer, response_deserializer)
        return _UnaryResponse(self, acallable, stream_request=True)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, _registered_method: Any = False,
                      ) -> _StreamResponse:  # fmt: skip
        acallable = self.aio.stream_stream(method, request_serializer, response_deserializer)
        return _StreamResponse(self, acallable, stream_request=True)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None],
                  try_to_connect: bool = False) -> None:  # fmt: skip
        """Tells the current state once: discovery changes are not pushed as
        connectivity changes (a channel here is a whole upstream, not a connection)."""
        callback(self.aio.get_state(try_to_connect))

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self.aio.close())
            self._run(self._loop.shutdown_asyncgens())  # request iterators left unread
        finally:
            _stop(self._loop, self._thread)

    def __enter__(self) -> SyncChannel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sidecar.client.SyncChannel {self.aio.upstream.name}>"
