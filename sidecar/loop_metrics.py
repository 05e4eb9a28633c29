"""Lock-free cells for per-call Prometheus updates made on an event loop.

Does no I/O. prometheus_client guards every value with a `threading.Lock`, and a
histogram walks its buckets in Python: five locked updates per relayed call were ~9% of
the relay's CPU in a profile. A writer that runs on one event-loop thread (a relay
`Plane`, a grpcio `Pipeline`, an in-process client) takes *its own* `Cell` of a child's
value and bumps it without a lock. The child's value becomes a `Shards`, which sums the
cells (and any locked update made the usual way) when read, so /metrics stays exact
however many loops, in however many threads, write the same label set.

Only for the single-process value class: with prometheus_client's multiprocess mode
(values in mmap files) nothing is replaced and writers call inc()/observe().
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import values

_SWAP = threading.Lock()  # one child value becomes Shards once, whoever asks first


class Cell:
    """One writer's share of a value: `inc` without a lock (one thread writes it)."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = 0.0

    def inc(self, amount: float) -> None:
        self._value += amount


class Shards:
    """A child's value as prometheus_client's value class, summed from writers' cells."""

    __slots__ = ("_cells", "_exemplar", "_lock", "_value")
    _multiprocess = False

    def __init__(self, value: float) -> None:
        self._value = value  # what inc()/set() made the usual way
        self._cells: tuple[Cell, ...] = ()  # replaced, never mutated: readers need no lock
        self._lock = threading.Lock()
        self._exemplar: Any = None

    def new_cell(self) -> Cell:
        cell = Cell()
        with self._lock:
            self._cells = (*self._cells, cell)
        return cell

    def inc(self, amount: float) -> None:
        with self._lock:
            self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        with self._lock:
            self._value = value - sum(c._value for c in self._cells)

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value + sum(c._value for c in self._cells)

    def get_exemplar(self) -> Any:
        return self._exemplar


def _cell(get: Callable[[], Any], put: Callable[[Shards], None]) -> Cell | None:
    """A new cell of the value `get` returns, made Shards (by `put`) on first use."""
    with _SWAP:
        value = get()
        if type(value) is not Shards:
            if type(value) is not values.MutexValue:
                return None
            with value._lock:  # no locked inc() lost while it moves
                shards = Shards(value._value)
                put(shards)
            value = shards
    cell: Cell = value.new_cell()
    return cell


def _attr_cell(holder: Any, name: str) -> Cell | None:
    return _cell(lambda: getattr(holder, name), lambda s: setattr(holder, name, s))


def _item_cell(items: list[Any], i: int) -> Cell | None:
    return _cell(lambda: items[i], lambda s: items.__setitem__(i, s))


def counter_cell(child: Any) -> Cell | None:
    """This writer's cell of a counter or gauge child (a gauge: `inc(-1)` to lower it),
    or None when the value class cannot take cells."""
    return _attr_cell(child, "_value")


class HistogramCells:
    """This writer's cells of a histogram child: its sum and buckets; `observe` as the child's."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: list[float], total: Cell, buckets: list[Cell]) -> None:
        self.bounds = bounds
        self.sum = total
        self.buckets = buckets

    @staticmethod
    def of(child: Any) -> HistogramCells | None:
        total = _attr_cell(child, "_sum")
        if total is None:
            return None
        buckets: list[Cell] = []
        for i in range(len(child._buckets)):
            cell = _item_cell(child._buckets, i)
            if cell is None:
                return None
            buckets.append(cell)
        return HistogramCells(list(child._upper_bounds), total, buckets)

    def observe(self, amount: float) -> None:
        self.sum._value += amount
        # the first bucket whose upper bound is >= amount (prometheus_client's rule)
        self.buckets[bisect_left(self.bounds, amount)]._value += 1
