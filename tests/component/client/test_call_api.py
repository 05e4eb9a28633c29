"""The in-process client's unary calls used the ways grpc.aio's are besides `await
stub.Method(request)`: started and never awaited, cancelled before or while running,
watched by other waiters while the awaiting task runs the call (sidecar/client/call.py).
A real grpc.aio echo backend on loopback counts the calls and the cancels it sees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

import sidecar.client
from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import Echo

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def stub(echo: tuple[Echo, int]) -> AsyncIterator[Any]:
    config = {"upstreams": {"echo": {"endpoints": [f"127.0.0.1:{echo[1]}"]}}}
    async with await sidecar.client.connect("echo", config) as channel:
        yield echo_pb2_grpc.EchoStub(channel)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def request(delay_ms: int = 0) -> Any:
    return echo_pb2.EchoRequest(payload=b"hi", delay_ms=delay_ms)


async def test_a_call_runs_without_being_awaited(stub: Any, echo: tuple[Echo, int]) -> None:
    """As with grpc.aio, a call starts when made: the backend sees it before anyone
    awaits it; awaiting it later gives its answer, once."""
    servicer, _ = echo
    call = stub.Unary(request(), timeout=5)
    await until(lambda: servicer.calls == 1)
    assert (await call).served_by == "e"
    assert call.done() and not call.cancelled()
    assert await call.code() is grpc.StatusCode.OK
    assert servicer.calls == 1


async def test_cancel_before_it_starts(stub: Any, echo: tuple[Echo, int]) -> None:
    """Cancelled in the same loop turn it was made: it never reaches the backend, and
    awaiting it raises CANCELLED."""
    servicer, _ = echo
    call = stub.Unary(request(), timeout=5)
    assert call.cancel()
    assert call.cancelled() and call.done()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() is grpc.StatusCode.CANCELLED
    await asyncio.sleep(0.2)
    assert servicer.calls == 0


async def test_cancel_while_an_awaiting_task_runs_it(stub: Any, echo: tuple[Echo, int]) -> None:
    """`call.cancel()` while another task awaits (and so runs) the call: that task gets
    CANCELLED, goes on running, and the backend's handler is cancelled too."""
    servicer, _ = echo
    calls: list[Any] = []

    async def caller() -> str:
        call = stub.Unary(request(delay_ms=10_000), timeout=20)
        calls.append(call)
        try:
            await call
        except grpc.aio.AioRpcError as err:
            return err.code().name
        return "OK"

    task = asyncio.ensure_future(caller())
    await until(lambda: servicer.calls == 1)
    (call,) = calls
    assert not call.done()
    assert call.cancel()
    assert await task == "CANCELLED"
    assert call.cancelled() and await call.code() is grpc.StatusCode.CANCELLED
    await until(lambda: servicer.cancelled == 1)


async def test_the_awaiting_tasks_own_cancel_reaches_the_backend(
    stub: Any, echo: tuple[Echo, int]
) -> None:
    """Cancelling the task that awaits the call raises CancelledError in it (not a
    status) and cancels the backend's handler."""
    servicer, _ = echo

    async def caller() -> None:
        await stub.Unary(request(delay_ms=10_000), timeout=20)

    task = asyncio.ensure_future(caller())
    await until(lambda: servicer.calls == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: servicer.cancelled == 1)


async def test_other_waiters_share_the_answer_of_a_running_call(
    stub: Any, echo: tuple[Echo, int]
) -> None:
    """While one task awaits the call, others may wait on its status or add a done
    callback: all see the one answer, and the backend sees one call."""
    servicer, _ = echo
    calls: list[Any] = []

    async def caller() -> Any:
        call = stub.Unary(request(delay_ms=200), timeout=5)
        calls.append(call)
        return await call

    task = asyncio.ensure_future(caller())
    await until(lambda: bool(calls))
    (call,) = calls
    assert not call.done()
    finished: list[Any] = []
    call.add_done_callback(finished.append)
    assert await call.code() is grpc.StatusCode.OK
    assert (await task).served_by == "e"
    assert (await call).served_by == "e"
    await until(lambda: finished == [call])
    assert servicer.calls == 1
