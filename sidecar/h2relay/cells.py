"""Lock-free cells for the relay's per-call Prometheus updates.

Does no I/O. prometheus_client guards every value with a `threading.Lock`, and a
histogram walks its buckets in Python: five locked updates per relayed call were ~9% of
its CPU in a profile. The relay and the admin server (which reads the values at scrape
time) run on one event-loop thread, so the lock protects nothing here: the children
the relay uses get plain cells in place of their locked values, and the relay bumps
them directly. Scrapes read the same cells, so /metrics stays exact.

Only for the single-process value class: with prometheus_client's multiprocess mode
(values in mmap files) nothing is replaced and the relay calls inc()/observe().
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import values


class Cell:
    """The interface of prometheus_client's value class, without the lock."""

    __slots__ = ("_exemplar", "_value")
    _multiprocess = False

    def __init__(self, value: float = 0.0) -> None:
        self._value = value
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


def _plain(value: Any) -> Cell | None:
    if type(value) is not values.MutexValue:
        return None
    return Cell(value.get())  # type: ignore[no-untyped-call]


def counter_cell(child: Any) -> Cell | None:
    """Swap a counter child's value for a Cell (returned), or None when it cannot be."""
    cell = _plain(child._value)
    if cell is not None:
        child._value = cell
    return cell


class HistogramCells:
    """A histogram child's sum and buckets as Cells; `observe` as the child's own."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, child: Any) -> None:
        self.bounds: list[float] = list(child._upper_bounds)
        self.sum = Cell(child._sum.get())
        self.buckets = [Cell(b.get()) for b in child._buckets]
        child._sum = self.sum
        child._buckets = self.buckets

    @staticmethod
    def of(child: Any) -> HistogramCells | None:
        ok = type(child._sum) is values.MutexValue and all(
            type(b) is values.MutexValue for b in child._buckets
        )
        return HistogramCells(child) if ok else None

    def observe(self, amount: float) -> None:
        self.sum._value += amount
        # the first bucket whose upper bound is >= amount (prometheus_client's rule)
        self.buckets[bisect_left(self.bounds, amount)]._value += 1
