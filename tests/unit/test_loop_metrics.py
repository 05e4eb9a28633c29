"""Lock-free metric cells (sidecar/loop_metrics.py) expose what prometheus_client would, with
one writer or several, and beside updates made the usual (locked) way."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sidecar.loop_metrics import HistogramCells, counter_cell

VALUES = [0.0, 0.0004, 0.001, 0.0025, 0.003, 0.1, 0.25, 7.5, 100.0]


def _exposition(writers: int) -> bytes:
    """Feed VALUES through `writers` sets of cells in turn (0: the children themselves),
    plus one locked update of each child, and scrape."""
    registry = CollectorRegistry()
    counter = Counter("c_total", "c", ["k"], registry=registry).labels("x")
    gauge = Gauge("g", "g", ["k"], registry=registry).labels("x")
    hist = Histogram("h_seconds", "h", ["k"], registry=registry,
                     buckets=(0.001, 0.0025, 0.1, 1.0)).labels("x")  # fmt: skip
    counter.inc(2)
    gauge.inc(5)
    hist.observe(0.5)
    if writers:
        sinks = [(counter_cell(counter), counter_cell(gauge), HistogramCells.of(hist))
                 for _ in range(writers)]  # fmt: skip
    else:
        sinks = [(counter, gauge, hist)]  # type: ignore[list-item]
    for i, v in enumerate(VALUES):
        c, g, h = sinks[i % len(sinks)]
        assert c is not None and g is not None and h is not None
        c.inc(1)
        g.inc(1)
        g.inc(-1 if i % 3 else 1)
        h.observe(v)
    counter.inc(1)  # a locked update after cells were handed out
    hist.observe(3.0)
    return b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )


@pytest.mark.parametrize("writers", [1, 3])
def test_cells_expose_the_same_samples_as_locked_values(writers: int) -> None:
    """Counters, gauges and histograms fed through cells scrape exactly as fed the usual way."""
    assert _exposition(writers) == _exposition(0)


def test_writers_in_threads_lose_nothing() -> None:
    """Each thread bumps its own cell: no increment is lost, however they interleave."""
    registry = CollectorRegistry()
    counter = Counter("t_total", "t", registry=registry)
    threads = []
    for _ in range(4):
        cell = counter_cell(counter)
        assert cell is not None
        threads.append(threading.Thread(target=lambda c=cell: [c.inc(1) for _ in range(50_000)]))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.get_sample_value("t_total") == 200_000
