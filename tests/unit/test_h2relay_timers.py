"""The relay's coarse timer wheel (sidecar/h2relay/timers.py) on a real event loop."""

from __future__ import annotations

import asyncio
import time

from sidecar.h2relay.timers import Wheel


class Target:
    def __init__(self, log: list[tuple[str, float]], name: str) -> None:
        self.log, self.name = log, name

    def fire(self) -> None:
        self.log.append((self.name, time.monotonic()))


async def test_timers_fire_in_order_never_early_and_cancelled_ones_never() -> None:
    """Targets fire in deadline order, not before their time and within a few ticks of it;
    a removed target does not fire; the wheel empties itself."""
    wheel = Wheel(asyncio.get_running_loop(), tick=0.001)
    log: list[tuple[str, float]] = []
    now = time.monotonic()
    whens = {"c": now + 0.06, "a": now + 0.02, "b": now + 0.04, "x": now + 0.03}
    slots = {name: wheel.add(when, Target(log, name)) for name, when in whens.items()}
    x = next(t for t in wheel.slots[slots["x"]])
    wheel.remove(slots["x"], x)
    await asyncio.sleep(0.2)
    assert [name for name, _ in log] == ["a", "b", "c"]
    for name, fired in log:
        assert whens[name] <= fired < whens[name] + 0.1  # generous: a shared machine
    assert len(wheel) == 0 and not wheel.slots
    wheel.close()
