"""The chaos harness's pure measures, on hand-made samples (no processes)."""

from __future__ import annotations

from typing import Any

from tests.chaos import timeline
from tests.chaos.load import Call, gauge_sum

ADDR = "198.18.0.2:1"


def _samples(
    counts: list[int | None], healthy: bool = True, breaker: str = "closed"
) -> list[tuple[float, Any]]:
    out = []
    for i, n in enumerate(counts):
        ep = {"address": ADDR, "requests": n, "healthy": healthy, "breaker": breaker}
        eps = [] if n is None else [ep]
        out.append((i * 0.5, {"echo": {"endpoints": eps}}))
    return out


def test_moved_time_is_when_attempts_stop() -> None:
    """Attempts stop growing at t=2.0 (fault at 1.0): moved after 1.0 s."""
    samples = _samples([0, 10, 20, 30, 40, 40, 40, 40, 40, 40, 40])
    assert timeline.moved_time(samples, "echo", ADDR, 1.0) == 1.0


def test_moved_time_allows_probes_only_past_an_open_breaker() -> None:
    """One attempt per sample is a probe while the breaker is open, ordinary traffic if closed."""
    counts: list[int | None] = [0, 10, 20, 30, 40, 41, 41, 42, 42, 43, 43, 44, 44, 45, 45]
    assert timeline.moved_time(_samples(counts, breaker="open"), "echo", ADDR, 1.0) == 1.0
    assert timeline.moved_time(_samples(counts), "echo", ADDR, 1.0) is None


def test_moved_time_none_while_traffic_continues() -> None:
    """An endpoint that keeps getting attempts has not moved."""
    samples = _samples([i * 10 for i in range(12)])
    assert timeline.moved_time(samples, "echo", ADDR, 1.0) is None


def test_moved_time_counts_removal_and_unhealthy() -> None:
    """Gone from the cluster, or marked unhealthy, counts as moved at once."""
    assert timeline.moved_time(_samples([0, 10, 20, None, None, None]), "echo", ADDR, 0.5) == 0.5
    assert timeline.eject_time(_samples([0, 1, 2], healthy=False), "echo", ADDR, 0.0) == 0.0


def test_per_second_shares_and_failures() -> None:
    """Per-second rows count failures by status and share OK calls per instance."""
    calls = [
        Call(0.1, 0.01, "OK", served_by="a"),
        Call(0.2, 0.01, "OK", served_by="b"),
        Call(0.3, 1.0, "UNAVAILABLE", error="no_endpoints"),
        Call(1.5, 0.02, "OK", served_by="a"),
    ]
    rows = timeline.per_second(calls)
    assert rows[0]["failures"] == {"UNAVAILABLE": 1}
    assert rows[0]["sidecar_errors"] == {"no_endpoints": 1}
    assert rows[0]["share"] == {"a": 0.5, "b": 0.5}
    assert rows[1]["share"] == {"a": 1.0}
    assert timeline.share(calls, "a", 0.0, 2.0) == 2 / 3


def test_gauge_sum_matches_labels() -> None:
    """Prometheus samples are summed over the lines whose labels match."""
    text = (
        "# HELP x\n"
        'sidecar_requests_in_flight{direction="inbound",upstream="app"} 3.0\n'
        'sidecar_requests_in_flight{direction="outbound",upstream="m"} 5.0\n'
    )
    assert gauge_sum(text, "sidecar_requests_in_flight", direction="inbound") == 3.0
    assert gauge_sum(text, "sidecar_requests_in_flight") == 8.0
