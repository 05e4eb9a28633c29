"""Run a policy coroutine without an asyncio Task while it does not have to wait.

Does I/O only through the futures the coroutine awaits. Inbound admission is a
coroutine (`AdmissionPolicy.acquire`, seam b) because a call may wait in its queue, yet
almost every call is admitted at once: wrapping each in a Task cost ~15-20 µs per
inbound call (the Task, its first scheduling, its completion), a quarter of a relayed
call. `Stepper` steps the coroutine by hand, the way a Task does: the first step runs
inline, and only when the coroutine awaits a pending future does it resume from that
future's done-callback. `cancel()` throws CancelledError into it, so its own cleanup
(leaving the admission queue) runs as it would under a Task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Stepper:
    __slots__ = ("_coro", "_done", "_fut", "_loop", "_on_error", "_on_result")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any],
        on_result: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._loop = loop
        self._coro = coro
        self._on_result = on_result
        self._on_error = on_error
        self._fut: Any = None
        self._done = False

    def step(self, _fut: Any = None) -> None:
        if self._done:
            return
        self._fut = None
        try:
            fut = self._coro.send(None)
        except StopIteration as stop:
            self._done = True
            self._on_result(stop.value)
            return
        except BaseException as exc:
            self._done = True
            self._on_error(exc)
            return
        if fut is None:  # a bare yield (asyncio.sleep(0)): resume next loop turn
            self._loop.call_soon(self.step)
            return
        fut._asyncio_future_blocking = False  # as Task.__step does
        self._fut = fut
        fut.add_done_callback(self.step)

    def cancel(self) -> None:
        """Stop it: CancelledError inside the coroutine; no callback afterwards."""
        if self._done:
            return
        self._done = True
        fut, self._fut = self._fut, None
        if fut is not None:
            fut.remove_done_callback(self.step)
        try:
            self._coro.throw(asyncio.CancelledError())
        except (asyncio.CancelledError, StopIteration):
            pass
        except Exception:
            log.exception("a policy coroutine failed while being cancelled")
        else:  # it swallowed the cancel and waits again: close it
            self._coro.close()
