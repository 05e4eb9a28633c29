"""Prometheus metrics of inbound admission (default registry). No I/O of its own."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DROPPED = Counter(
    "sidecar_dropped_requests_total",
    "Inbound requests dropped before reaching the app, by reason (overloaded, deadline).",
    ["reason"],
)
ADMISSION_LIMIT = Gauge("sidecar_admission_limit", "Current inbound concurrency limit.")
ADMISSION_IN_FLIGHT = Gauge("sidecar_admission_in_flight", "Inbound calls in flight to the app.")
ADMISSION_QUEUED = Gauge(
    "sidecar_admission_queued", "Inbound calls waiting in the admission queue."
)
