"""Lock-free metric cells (sidecar/h2relay/cells.py) expose what prometheus_client would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sidecar.h2relay.cells import HistogramCells, counter_cell

VALUES = [0.0, 0.0004, 0.001, 0.0025, 0.003, 0.1, 0.25, 7.5, 100.0]


def _exposition(use_cells: bool) -> bytes:
    registry = CollectorRegistry()
    counter = Counter("c_total", "c", ["k"], registry=registry).labels("x")
    hist = Histogram("h_seconds", "h", ["k"], registry=registry,
                     buckets=(0.001, 0.0025, 0.1, 1.0)).labels("x")  # fmt: skip
    c_cell = counter_cell(counter) if use_cells else counter
    h_cells = HistogramCells.of(hist) if use_cells else hist
    assert c_cell is not None and h_cells is not None
    for v in VALUES:
        c_cell.inc(1)
        h_cells.observe(v)
    return b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )


def test_cells_expose_the_same_samples_as_locked_values() -> None:
    """A counter and a histogram fed through cells scrape exactly as fed the usual way."""
    assert _exposition(True) == _exposition(False)
