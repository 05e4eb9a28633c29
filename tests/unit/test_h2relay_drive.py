"""Stepping a coroutine without a Task (sidecar/h2relay/stepper.py), on a real loop."""

from __future__ import annotations

import asyncio
from typing import Any

from sidecar.h2relay.stepper import Stepper


async def test_completes_inline_when_nothing_waits() -> None:
    """A coroutine that never waits finishes inside step(), before it returns."""
    got: list[Any] = []

    async def quick() -> int:
        return 7

    Stepper(asyncio.get_running_loop(), quick(), got.append, got.append).step()
    assert got == [7]


async def test_resumes_from_the_awaited_future_and_passes_errors() -> None:
    """It resumes when the awaited future resolves; a raise goes to on_error."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    results: list[Any] = []
    errors: list[BaseException] = []

    async def waits() -> int:
        await asyncio.sleep(0)
        value = await fut
        if value < 0:
            raise ValueError("negative")
        return value * 2

    Stepper(loop, waits(), results.append, errors.append).step()
    await asyncio.sleep(0.01)
    assert results == [] and errors == []
    fut.set_result(21)
    await asyncio.sleep(0.01)
    assert results == [42] and errors == []

    fut2: asyncio.Future[int] = loop.create_future()

    async def fails() -> int:
        return -(await fut2)

    Stepper(loop, fails(), results.append, errors.append).step()
    fut2.set_exception(ValueError("boom"))
    await asyncio.sleep(0.01)
    assert [str(e) for e in errors] == ["boom"]


async def test_cancel_runs_the_coroutine_cleanup_and_reports_nothing() -> None:
    """cancel() while waiting throws CancelledError inside (cleanup runs), no callback."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    cleaned: list[str] = []
    calls: list[Any] = []

    async def queued() -> int:
        try:
            return await fut
        except asyncio.CancelledError:
            cleaned.append("left the queue")
            raise

    stepper = Stepper(loop, queued(), calls.append, calls.append)
    stepper.step()
    stepper.cancel()
    fut.set_result(1)
    await asyncio.sleep(0.01)
    assert cleaned == ["left the queue"] and calls == []
