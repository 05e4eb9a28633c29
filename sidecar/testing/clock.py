"""A fake clock you advance, and an asyncio event loop that keeps its time.

Does no I/O: the loop has no selector, no self-pipe and no sockets, and it never
sleeps. trio's `MockClock` (src/trio/_core/_mock_clock.py) is the model. Code under
test reads the time from the clock (a relay `Plane(clock=clock)` or `Pool(clock=...)`,
a `Wheel`), and the loop's own `time()` is the same clock, so `loop.call_later` timers
(a retry's backoff, a fault's delay, the wheel's one loop timer, a connect timeout) run
at fake times too.

How time moves: only when a test says so. `await clock.advance(s)` runs every timer
due up to `now + s`, each at its own time (the clock reads exactly the timer's time
while it runs), and returns once nothing more is ready at `now + s`. When the loop
has nothing ready and would wait for a timer (or for nothing at all), a real loop
would sleep: this one raises `Stalled` instead, naming the time of the next timer,
unless the clock was made with `autojump=True`, which then jumps to that timer at
once (the test awaits an answer and reads the fake time it came at). No test can
sleep in real time.

Connections: `loop.create_connection(factory, host, port)` reaches what a
`FakeNetwork` serves at `host:port` (sidecar/testing/upstream.py's `FakeUpstream`),
over the in-memory transport pair of sidecar/h2relay/memory.py; an address nobody
serves refuses the connection, one made a black hole never answers (the caller's
connect timeout applies). Threads are not supported (`run_in_executor` would wait on
a thread, and the loop refuses to wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from sidecar.h2relay.memory import memory_pair

T = TypeVar("T")
# a timer this close past an advance's end is due within it: times are sums of floats
# (1000.1 + 0.2 > 1000.3), and a test that advances 0.3 s means the timer 0.3 s away
_ROUNDING_S = 1e-9
ProtocolT = TypeVar("ProtocolT", bound=asyncio.BaseProtocol)


class Stalled(RuntimeError):
    """The loop has nothing to run and would have to wait: a real loop would sleep
    (until its next timer) or hang (no timer at all). Advance the clock, or await
    something that is ready."""


class IOForbidden(RuntimeError):
    """Code under a fake clock tried to open a socket or to sleep for real."""


class UnhandledError(RuntimeError):
    """A callback or a task of the fake loop raised and nobody took the error: asyncio
    would only log it (FakeClock.run fails the run instead)."""


class FakeClock:
    """Fake monotonic time, in seconds from `start`. Call it for the time (it is a
    `Callable[[], float]`, what a `Plane` or a `Wheel` takes as its clock)."""

    def __init__(self, start: float = 1000.0, *, autojump: bool = False) -> None:
        self._now = start
        self.autojump = autojump
        self.network = FakeNetwork()
        self._loop: FakeLoop | None = None
        # an advance() in progress: (the time it goes to, the future it returns on)
        self._target: tuple[float, asyncio.Future[None]] | None = None

    def __call__(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now

    def new_event_loop(self) -> FakeLoop:
        """The loop that keeps this clock's time (one loop per clock)."""
        if self._loop is not None and not self._loop.is_closed():
            raise RuntimeError("this clock already has an open loop")
        self._loop = FakeLoop(self)
        return self._loop

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run `main` to its end on a new loop of this clock, sockets and real sleeps
        refused (`no_io`): `asyncio.run` on fake time. Fails (IOForbidden) if anything
        tried a socket or a sleep, even where the code under test caught the error, and
        (UnhandledError) if a callback or task raised an error that asyncio would only
        have logged."""
        with no_io() as refused:
            with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
                result = runner.run(main)
                loop = runner.get_loop()
            assert isinstance(loop, FakeLoop)
            if refused:
                raise IOForbidden(f"under a fake clock: {'; '.join(refused)}")
            if loop.errors:
                raise UnhandledError(f"{len(loop.errors)} unhandled: {loop.errors[0]}")
        return result

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, running each timer due on the way at its own
        time; return once nothing is ready any more at the new time."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError("advance() runs in this clock's own loop (FakeClock.run)")
        if self._target is not None:
            raise RuntimeError("another advance() is in progress")
        done: asyncio.Future[None] = loop.create_future()
        self._target = (self._now + seconds, done)
        try:
            await done
        finally:
            self._target = None

    async def settle(self) -> None:
        """Run what is ready now, without moving time."""
        await self.advance(0.0)

    def _idle(self, timeout: float | None) -> None:
        """The loop would wait `timeout` seconds for its next timer (None: it has none)."""
        target = self._target
        if target is not None:
            until, done = target
            if timeout is not None and self._now + timeout <= until + _ROUNDING_S:
                self._now += timeout  # to the next timer (exact: close floats subtract exactly)
                return
            self._now = max(self._now, until)
            if not done.done():
                done.set_result(None)
            return
        if self.autojump and timeout is not None:
            self._now += timeout
            return
        if timeout is None:
            raise Stalled(
                f"at t={self._now}: nothing is ready and no timer is set: "
                "the test waits on something that never comes"
            )
        raise Stalled(
            f"at t={self._now}: the loop would sleep {timeout:.6f} s until its next timer: "
            "await clock.advance(...) (or make the clock with autojump=True)"
        )

    def __repr__(self) -> str:
        return f"FakeClock(t={self._now}, autojump={self.autojump})"


class FakeNetwork:
    """Who answers a connection to an address (`host:port`, as Endpoint.address)."""

    def __init__(self) -> None:
        self.servers: dict[str, Callable[[], asyncio.Protocol]] = {}
        self.black_holes: set[str] = set()
        self.connects: list[str] = []  # every address a connection was asked for, in order

    def serve(self, address: str, factory: Callable[[], asyncio.Protocol]) -> None:
        """Connections to `address` get a new protocol from `factory` (the server side)."""
        self.black_holes.discard(address)
        self.servers[address] = factory

    def refuse(self, address: str) -> None:
        """Connections to `address` are refused (as by a port nobody listens on)."""
        self.servers.pop(address, None)
        self.black_holes.discard(address)

    def black_hole(self, address: str) -> None:
        """Connections to `address` never complete (a dropped SYN)."""
        self.servers.pop(address, None)
        self.black_holes.add(address)


class _NoSelector:
    """What BaseEventLoop polls each turn: no I/O to poll, so its only job is to say
    when the loop is idle (a timeout other than 0) and let the clock decide."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.closing = False

    def select(self, timeout: float | None) -> list[Any]:
        if timeout == 0:
            return []
        if self.closing:  # shutting down after a failure: let timers run, never stall
            if timeout is not None:
                self.clock._now += timeout
            return []
        self.clock._idle(timeout)
        return []


class FakeLoop(asyncio.BaseEventLoop):
    """An asyncio loop on a `FakeClock`: timers in fake time, no I/O but the clock's
    `FakeNetwork` (see the module's docstring)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self._selector = _NoSelector(clock)
        self.errors: list[str] = []  # what the exception handler was given (see FakeClock.run)
        self.set_exception_handler(_keep_error)

    def time(self) -> float:
        return self.clock._now

    # what BaseEventLoop asks of its subclasses (SelectorEventLoop's I/O, none here)
    def _process_events(self, event_list: list[Any]) -> None:
        return None

    def _write_to_self(self) -> None:
        return None  # call_soon_threadsafe: there are no other threads to wake us

    def run_until_complete(self, future: Any) -> Any:
        try:
            return super().run_until_complete(future)
        except Stalled:
            self._selector.closing = True  # the runner's cleanup may still run timers
            raise

    async def create_connection(
        self,
        protocol_factory: Callable[[], ProtocolT],
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ProtocolT]:
        """A connection to what the clock's network serves at `host:port`."""
        address = f"[{host}]:{port}" if host and ":" in host else f"{host}:{port}"
        network = self.clock.network
        network.connects.append(address)
        if address in network.black_holes:
            await self.create_future()  # never: the caller's timeout ends the wait
        factory = network.servers.get(address)
        if factory is None:
            raise ConnectionRefusedError(f"[fake network] connection to {address} refused")
        protocol = protocol_factory()
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError("the fake network carries streams (asyncio.Protocol) only")
        transport, _ = memory_pair(self, protocol, factory())
        return transport, protocol

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        raise IOForbidden(
            "a fake loop listens on nothing: connect a caller in memory "
            "(sidecar.testing.h2_pair) or serve a fake upstream on the clock's network"
        )

    def __repr__(self) -> str:
        return f"<FakeLoop {self.clock!r}>"


def _keep_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    assert isinstance(loop, FakeLoop)
    exc = context.get("exception")
    loop.errors.append(f"{context.get('message')}: {exc!r}" if exc else str(context.get("message")))
    loop.default_exception_handler(context)  # logged as well, with its traceback


_refused: list[list[str]] = []  # one list per no_io() in force (innermost last)


def _forbid(what: str) -> IOForbidden:
    for found in _refused:
        found.append(what)
    return IOForbidden(f"{what} under a fake clock (sidecar.testing.no_io)")


class _NoSocket(socket.socket):
    def __new__(cls, *args: Any, **kwargs: Any) -> _NoSocket:
        raise _forbid("socket.socket()")


def _no_socketpair(*args: Any, **kwargs: Any) -> Any:
    raise _forbid("socket.socketpair()")


def _no_create_connection(*args: Any, **kwargs: Any) -> Any:
    raise _forbid(f"socket.create_connection{args[:1]}")


def _no_sleep(seconds: Any) -> None:
    raise _forbid(f"time.sleep({seconds})")


@contextlib.contextmanager
def no_io() -> Iterator[list[str]]:
    """Within it, opening a socket (`socket.socket`, `socketpair`, `create_connection`)
    or sleeping in real time (`time.sleep`) raises IOForbidden, as pytest-socket's
    `disable_socket` does for sockets; it yields the list of what was refused (caught
    or not by the code that tried)."""
    saved = (socket.socket, socket.socketpair, socket.create_connection, time.sleep)
    refused: list[str] = []
    _refused.append(refused)
    socket.socket = _NoSocket  # type: ignore[misc]
    socket.socketpair = _no_socketpair
    socket.create_connection = _no_create_connection
    time.sleep = _no_sleep
    try:
        yield refused
    finally:
        _refused.remove(refused)
        if not _refused:
            socket.socket, socket.socketpair, socket.create_connection, time.sleep = saved  # type: ignore[misc]
