"""Prometheus metrics of inbound admission, on the registry they are given.

No I/O of its own. One `SheddingMetrics` per sidecar (sidecar/metrics.py's `Metrics`);
`registry=None` registers nowhere (an admission built alone, in a unit test).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class SheddingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.dropped = Counter(
            "sidecar_dropped_requests_total",
            "Inbound requests dropped before reaching the app, by reason (overloaded, deadline).",
            ["reason"],
            registry=registry,
        )
        self.limit = Gauge(
            "sidecar_admission_limit", "Current inbound concurrency limit.", registry=registry
        )
        self.in_flight = Gauge(
            "sidecar_admission_in_flight", "Inbound calls in flight to the app.", registry=registry
        )
        self.queued = Gauge(
            "sidecar_admission_queued",
            "Inbound calls waiting in the admission queue.",
            registry=registry,
        )
