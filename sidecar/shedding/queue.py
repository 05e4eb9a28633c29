"""The inbound admission queue discipline: who runs, who waits, who is dropped.

Pure (time is passed in; the asyncio layer in `admission.py` does the waiting).
Every mutating call returns what happened to which request, and the caller acts.

Rules, in the order they apply to a request:

1. Deadline: a request whose remaining deadline is spent, or shorter than
   `min_deadline_s`, is dropped (`deadline`), on arrival or while queued. The
   app never sees a request whose caller has given up or is about to (the
   Spotify/Apollo lesson: such a request is pure waste).
2. Concurrency: below the limit (see `limit.py`) and with nobody queued, run now.
3. Otherwise queue, bounded by `queue_size`. Priority classes from
   `x-sidecar-priority`: critical before default before sheddable. A full queue
   makes room by dropping the oldest request of the lowest class below the new
   one's; else the new one is dropped. While CoDel says overloaded, sheddable
   requests are not queued at all.
4. Sojourn: CoDel (`codel.py`) bounds the wait: `interval` normally, 2 x
   `target` when overloaded; older requests are dropped (`overloaded`).
5. Order: FIFO normally; LIFO while overloaded (adaptive LIFO, "Fail at Scale"):
   under a standing queue the oldest requests are the likeliest to have been
   abandoned, so serving the newest gives answers to callers still waiting.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections import deque
from typing import Generic, TypeVar

from sidecar.shedding.codel import CoDel
from sidecar.shedding.limit import Limit

T = TypeVar("T")

ADMIT = "admit"
QUEUED = "queued"
OVERLOADED = "overloaded"
DEADLINE = "deadline"

_UNLIMITED = 2**31 - 1


class Priority(enum.IntEnum):
    CRITICAL = 0
    DEFAULT = 1
    SHEDDABLE = 2


PRIORITY_KEY = "x-sidecar-priority"
_PRIORITIES = {p.name.lower(): p for p in Priority}


def parse_priority(value: str | None) -> Priority:
    """`x-sidecar-priority` metadata value; anything unknown is `default`."""
    if value is None:
        return Priority.DEFAULT
    return _PRIORITIES.get(value.strip().lower(), Priority.DEFAULT)


class _Waiter(Generic[T]):
    __slots__ = ("deadline", "enqueued_at", "gone", "item", "priority")

    def __init__(self, item: T, priority: Priority, deadline: float, enqueued_at: float) -> None:
        self.item = item
        self.priority = priority
        self.deadline = deadline  # math.inf: none
        self.enqueued_at = enqueued_at
        self.gone = False  # left the queue (admitted, dropped, cancelled): lazy deletion


class AdmissionQueue(Generic[T]):
    """In-flight count, limit and bounded priority queue for one app."""

    def __init__(
        self,
        limit: Limit | None,
        *,
        queue_size: int = 256,
        codel_target_s: float = 0.005,
        codel_interval_s: float = 0.1,
        min_deadline_s: float = 0.0,
    ) -> None:
        self.limit_algo = limit
        self.queue_size = queue_size
        self.codel = CoDel(codel_target_s, codel_interval_s)
        self.min_deadline_s = min_deadline_s
        self.in_flight = 0
        self.queued = 0
        self._queues: tuple[deque[_Waiter[T]], ...] = tuple(deque() for _ in Priority)
        self._by_item: dict[T, _Waiter[T]] = {}
        # (deadline - min_deadline, seq, waiter): when a queued request must go.
        self._expiry: list[tuple[float, int, _Waiter[T]]] = []
        self._seq = 0

    @property
    def limit(self) -> int:
        return _UNLIMITED if self.limit_algo is None else self.limit_algo.limit

    @property
    def lifo(self) -> bool:
        return self.codel.overloaded

    def _too_late(self, now: float, deadline: float) -> bool:
        remaining = deadline - now
        return remaining <= 0.0 or remaining < self.min_deadline_s

    # -- arrivals ---------------------------------------------------------------

    def offer(
        self, now: float, item: T, priority: Priority, deadline: float | None
    ) -> tuple[str, list[tuple[T, str]]]:
        """A request arrives. Returns (its fate: admit/queued/overloaded/deadline,
        queued requests dropped to make room for it, with their reasons)."""
        dl = math.inf if deadline is None else deadline
        if self._too_late(now, dl):
            return DEADLINE, []
        self.codel.tick(now, self.queued == 0)
        if self.queued == 0 and self.in_flight < self.limit:
            self.in_flight += 1
            self.codel.sample(0.0)  # the queue was empty: that is what CoDel looks for
            return ADMIT, []
        if self.queue_size == 0:
            return OVERLOADED, []
        if priority is Priority.SHEDDABLE and self.codel.overloaded:
            return OVERLOADED, []
        evicted: list[tuple[T, str]] = []
        if self.queued >= self.queue_size:
            victim = self._lowest_below(priority)
            if victim is None:
                return OVERLOADED, []
            self._remove(victim)
            evicted.append((victim.item, OVERLOADED))
        waiter = _Waiter(item, priority, dl, now)
        self._queues[priority].append(waiter)
        self._by_item[item] = waiter
        self.queued += 1
        if dl != math.inf:
            self._seq += 1
            heapq.heappush(self._expiry, (dl - self.min_deadline_s, self._seq, waiter))
        return QUEUED, evicted

    def _lowest_below(self, priority: Priority) -> _Waiter[T] | None:
        """The oldest queued request of the lowest class strictly below `priority`."""
        for p in reversed(Priority):
            if p <= priority:
                return None
            q = self._queues[p]
            while q and q[0].gone:
                q.popleft()
            if q:
                return q[0]
        return None

    def _remove(self, waiter: _Waiter[T]) -> None:
        waiter.gone = True
        self.queued -= 1
        del self._by_item[waiter.item]

    def cancel(self, item: T) -> bool:
        """The caller went away while queued. False if it was not queued."""
        waiter = self._by_item.get(item)
        if waiter is None:
            return False
        self._remove(waiter)
        return True

    # -- departures ---------------------------------------------------------------

    def release(
        self, now: float, rtt_s: float | None, dropped: bool = False
    ) -> list[tuple[T, str]]:
        """An admitted request finished. `rtt_s` None: no sample (ignored: the
        caller cancelled, so its time says nothing about the app). Returns the
        queued requests this admits or drops."""
        if self.limit_algo is not None and rtt_s is not None:
            self.limit_algo.on_sample(rtt_s, self.in_flight, dropped)
        self.in_flight = max(0, self.in_flight - 1)
        return self.poll(now)

    def poll(self, now: float) -> list[tuple[T, str]]:
        """Drop what must go, then admit from the queue while there is room."""
        events = self._sweep(now)
        while self.queued and self.in_flight < self.limit:
            self.codel.sample(now - self._oldest_enqueued_at())
            waiter = self._pop()
            sojourn = now - waiter.enqueued_at
            self._remove(waiter)
            if self._too_late(now, waiter.deadline):
                events.append((waiter.item, DEADLINE))
            elif sojourn > self.codel.max_sojourn_s:
                events.append((waiter.item, OVERLOADED))
            else:
                self.in_flight += 1
                events.append((waiter.item, ADMIT))
        return events

    def _pop(self) -> _Waiter[T]:
        lifo = self.lifo
        for q in self._queues:
            while q:
                waiter = q.pop() if lifo else q.popleft()
                if not waiter.gone:
                    return waiter
        raise LookupError("queue accounting is broken: queued > 0 but no waiter")

    def _oldest_enqueued_at(self) -> float:
        oldest = math.inf
        for q in self._queues:
            while q and q[0].gone:
                q.popleft()
            if q and q[0].enqueued_at < oldest:
                oldest = q[0].enqueued_at
        return oldest

    def _sweep(self, now: float) -> list[tuple[T, str]]:
        """Drop queued requests past their deadline or their allowed sojourn."""
        self.codel.tick(now, self.queued == 0)
        events: list[tuple[T, str]] = []
        while self._expiry and (self._expiry[0][2].gone or self._expiry[0][0] <= now):
            _, _, waiter = heapq.heappop(self._expiry)
            if not waiter.gone:
                self._remove(waiter)
                events.append((waiter.item, DEADLINE))
        max_sojourn = self.codel.max_sojourn_s
        for q in self._queues:
            # Each class is in arrival order, so the too-old ones are at the left.
            while q and (q[0].gone or now - q[0].enqueued_at > max_sojourn):
                waiter = q.popleft()
                if not waiter.gone:
                    self._remove(waiter)
                    events.append((waiter.item, OVERLOADED))
        return events

    def next_wakeup(self) -> float | None:
        """When `poll` next has something to drop (None: nothing queued)."""
        if not self.queued:
            return None
        when = math.inf
        while self._expiry and self._expiry[0][2].gone:
            heapq.heappop(self._expiry)
        if self._expiry:
            when = self._expiry[0][0]
        max_sojourn = self.codel.max_sojourn_s
        for q in self._queues:
            while q and q[0].gone:
                q.popleft()
            if q:
                when = min(when, q[0].enqueued_at + max_sojourn)
        # CoDel may become overloaded at its interval's end and shorten max sojourn.
        end = self.codel.interval_end
        if end is not None:
            when = min(when, end)
        return when

    def __repr__(self) -> str:
        sizes = "/".join(str(sum(not w.gone for w in q)) for q in self._queues)
        mode = "lifo" if self.lifo else "fifo"
        return (
            f"AdmissionQueue(in_flight={self.in_flight}/{self.limit}, queued={sizes} "
            f"(critical/default/sheddable), {mode})"
        )
