"""Prometheus metrics for circuit breakers, on the registry they are given.

No I/O of its own. One `BreakerMetrics` per sidecar (sidecar/metrics.py's `Metrics`),
shared by the breakers of all its upstreams; `registry=None` registers nowhere (a
breaker built alone, in a unit test).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

# 0 = closed, 1 = half-open (one probe allowed), 2 = open: higher is sicker.
STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class BreakerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.state = Gauge(
            "sidecar_breaker_state",
            "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
            ["upstream", "endpoint"],
            registry=registry,
        )
        self.transitions = Counter(
            "sidecar_breaker_transitions_total",
            "Circuit breaker state changes per endpoint, by the state entered.",
            ["upstream", "endpoint", "to"],
            registry=registry,
        )
        self.held = Counter(
            "sidecar_breaker_ejections_held_total",
            "Trips refused because max_ejection_percent of the upstream was already ejected.",
            ["upstream"],
            registry=registry,
        )
