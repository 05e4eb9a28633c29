"""The shipped fake clock and its loop (sidecar/testing/clock.py): timers run at their
own fake times, only when time is advanced; a loop that would sleep raises instead;
autojump; sockets and real sleeps refused; the fake network's refusals and black
holes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import pytest

from sidecar.h2relay.timers import Wheel
from sidecar.testing import FakeClock, IOForbidden, Stalled, UnhandledError, no_io


def test_advance_runs_each_timer_at_its_own_time() -> None:
    """Timers at 0.1, 0.25 and 0.4 s; advancing 0.3 s runs the first two, each seeing
    the clock at its own time, and leaves the third."""
    clock = FakeClock(start=50.0)
    seen: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert loop.time() == clock() == 50.0
        for name, delay in (("late", 0.4), ("first", 0.1), ("second", 0.25)):
            loop.call_later(delay, lambda n=name: seen.append((n, clock())))
        await clock.advance(0.3)
        assert seen == [("first", 50.1), ("second", 50.25)]
        assert clock() == 50.3
        await clock.advance(0.1)
        assert [n for n, _ in seen] == ["first", "second", "late"]

    clock.run(main())


def test_waiting_for_time_not_advanced_raises_stalled() -> None:
    """asyncio.sleep(1) without advancing: a real loop would sleep; this one raises."""
    clock = FakeClock()

    async def main() -> None:
        await asyncio.sleep(1.0)

    with pytest.raises(Stalled, match=r"would sleep 1\.000000 s"):
        clock.run(main())


def test_waiting_on_nothing_raises_stalled() -> None:
    clock = FakeClock()

    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(Stalled, match="no timer is set"):
        clock.run(main())


def test_autojump_moves_to_the_next_timer_when_idle() -> None:
    """With autojump, awaiting a timer jumps the clock to it: a sleep and a timeout
    end at their exact fake times."""
    clock = FakeClock(start=0.0, autojump=True)

    async def main() -> list[float]:
        times = []
        await asyncio.sleep(2.5)
        times.append(clock())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.get_running_loop().create_future(), 0.5)
        times.append(clock())
        return times

    assert clock.run(main()) == [2.5, 3.0]


def test_the_timer_wheel_fires_on_the_fake_clock() -> None:
    """sidecar/h2relay/timers.py's Wheel with the clock as its clock: a target at
    +0.2 s fires once the clock passes it (rounded up to the 1 ms tick), not before."""
    clock = FakeClock(start=10.0)
    fired: list[float] = []

    class Target:
        def fire(self) -> None:
            fired.append(clock())

    async def main() -> None:
        wheel = Wheel(asyncio.get_running_loop(), clock=clock)
        wheel.add(10.2, Target())
        await clock.advance(0.199)
        assert fired == []
        await clock.advance(0.002)
        assert len(fired) == 1 and 10.2 <= fired[0] <= 10.201

    clock.run(main())


def test_sockets_and_real_sleeps_are_refused() -> None:
    """Under no_io (and so under FakeClock.run) a socket or time.sleep raises."""
    with no_io():
        with pytest.raises(IOForbidden):
            socket.socket()
        with pytest.raises(IOForbidden):
            socket.socketpair()
        with pytest.raises(IOForbidden):
            socket.create_connection(("127.0.0.1", 9))
        with pytest.raises(IOForbidden):
            time.sleep(0.001)
    socket.socket().close()  # restored on the way out

    async def main() -> None:
        socket.socket()

    with pytest.raises(IOForbidden):
        FakeClock().run(main())


def test_the_fake_network_refuses_and_black_holes() -> None:
    """An address nobody serves refuses; a black hole never connects (the caller's
    timeout ends the wait, in fake time); nothing may listen."""
    clock = FakeClock(autojump=True)
    clock.network.black_hole("10.0.0.9:1")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(ConnectionRefusedError, match=r"10\.0\.0\.8:1"):
            await loop.create_connection(asyncio.Protocol, "10.0.0.8", 1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3.0):
                await loop.create_connection(asyncio.Protocol, "10.0.0.9", 1)
        with pytest.raises(IOForbidden):
            await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)

    clock.run(main())
    assert clock.network.connects == ["10.0.0.8:1", "10.0.0.9:1"]


def test_a_refused_socket_fails_the_run_even_when_the_code_caught_it() -> None:
    """Code under test that swallows the error does not hide the socket it tried."""

    async def main() -> None:
        with contextlib.suppress(Exception):
            socket.socket()

    with pytest.raises(IOForbidden, match=r"socket\.socket\(\)"):
        FakeClock().run(main())


def test_an_error_asyncio_would_only_log_fails_the_run() -> None:
    """A timer callback that raises: asyncio logs it and goes on; the run fails."""

    async def main() -> None:
        asyncio.get_running_loop().call_soon(lambda: 1 / 0)
        await asyncio.sleep(0)

    with pytest.raises(UnhandledError, match="ZeroDivisionError"):
        FakeClock().run(main())
