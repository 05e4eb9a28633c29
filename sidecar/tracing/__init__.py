"""Distributed traces: W3C trace context on every relayed call, OpenTelemetry spans for
the calls that are sampled or failed, exported over OTLP off the request path.

`context` is what a call runs (pure, a few bytes per call); `spans` builds the
OpenTelemetry spans from what a finished call recorded; `export` is the bounded queue
and the thread that hands batches to the OTLP exporter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecar.config import Config
    from sidecar.tracing.export import Tracer
    from sidecar.tracing.metrics import TracingMetrics


def make_tracer(config: Config, metrics: TracingMetrics | None = None) -> Tracer | None:
    """The sidecar's tracer, or None with `tracing: off` (the default): then no
    OpenTelemetry module is even imported."""
    if config.tracing is None:
        return None
    from sidecar.tracing.export import Tracer

    return Tracer(config.tracing, config.service or "sidecar", config.site, metrics)
