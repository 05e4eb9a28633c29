"""What the tracer counts (sidecar/tracing/export.py), on the registry given
(sidecar/metrics.py's `Metrics`); None registers nowhere. No OpenTelemetry import here:
a sidecar with `tracing: off` declares these without loading the SDK."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class TracingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.dropped = Counter(
            "sidecar_tracing_dropped_calls_total",
            "Traced calls not exported because the export queue was full "
            "(the exporter fell behind)",
            registry=registry,
        )
        self.exported = Counter(
            "sidecar_tracing_spans_exported_total",
            "Spans the collector accepted",
            registry=registry,
        )
        self.failed = Counter(
            "sidecar_tracing_spans_failed_total",
            "Spans whose export failed (collector unreachable, or it refused them)",
            registry=registry,
        )
