"""Coarse timers for call deadlines: one loop timer for all calls, not one per call.

Does I/O only through the event loop's one timer. Almost every deadline is cancelled
(the call ends first), so what matters is the cost of arming and cancelling, paid on
every call: a loop TimerHandle costs ~3 µs to create and cancel (uvloop), a slot in a
dict a fraction of that. Deadlines are rounded *up* to the next `tick` (1 ms): a timer
never fires early, at most one tick late (gRPC deadlines are milliseconds on the wire).

Slots are numbered `ceil(when / tick)`; a heap holds the slot numbers, and the loop
timer is armed for the earliest slot that still has a target. In steady state the
earliest live slot belongs to the oldest call in flight, so the loop wakes about once
per deadline length (not once per call, not once per tick).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from typing import Protocol


class Target(Protocol):
    def fire(self) -> None: ...


class Wheel:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tick: float = 0.001,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = loop
        self.tick = tick
        # the plane's clock (Plane.clock): slot times are on it, and the loop timer's
        # delay is measured from it (a fake clock's loop keeps the same time,
        # sidecar/testing/clock.py)
        self.clock = clock
        self.slots: dict[int, dict[Target, None]] = {}  # slot -> targets (an ordered set)
        self._heap: list[int] = []
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = 0  # the slot the loop timer is set for

    def add(self, when: float, target: Target) -> int:
        """Fire `target` at or up to one tick after monotonic time `when`; the slot."""
        slot = math.ceil(when / self.tick)
        bucket = self.slots.get(slot)
        if bucket is None:
            bucket = self.slots[slot] = {}
            heapq.heappush(self._heap, slot)
            if self._handle is None or slot < self._armed_for:
                self._arm(slot)
        bucket[target] = None
        return slot

    def remove(self, slot: int, target: Target) -> None:
        bucket = self.slots.get(slot)
        if bucket is not None:
            bucket.pop(target, None)
            if not bucket:
                del self.slots[slot]  # its heap entry goes when it reaches the top

    def __len__(self) -> int:
        return sum(len(b) for b in self.slots.values())

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_for = slot
        delay = max(0.0, slot * self.tick - self.clock())
        self._handle = self.loop.call_later(delay, self._run)

    def _run(self) -> None:
        self._handle = None
        now = self.clock()
        heap = self._heap
        while heap and heap[0] * self.tick <= now:
            bucket = self.slots.pop(heapq.heappop(heap), None)
            if bucket:
                for target in list(bucket):
                    target.fire()
        while heap and heap[0] not in self.slots:  # slots emptied by cancels
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.slots.clear()
        self._heap.clear()
