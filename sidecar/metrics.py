"""The data plane's Prometheus metrics, on prometheus-client's default registry.

Declarations only (registering them is the one side effect, at import). Other
modules declare their own metrics beside their code on the same default registry;
`/metrics` serves them all. Labels: direction (`outbound` | `inbound`), upstream
(the upstream name; `app` inbound; `-` when no route), method (full path; `-` for
unrouted calls so callers cannot grow the label set), code (gRPC status name).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Proxy latencies run from well under a millisecond to a deadline of seconds.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

REQUESTS = Counter(
    "sidecar_requests_total",
    "Calls handled by the sidecar, by final status",
    ["direction", "upstream", "method", "code"],
)
DURATION = Histogram(
    "sidecar_request_duration_seconds",
    "Time from a call's arrival to its final status, retries included",
    ["direction", "upstream", "method"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "sidecar_requests_in_flight",
    "Calls being handled now",
    ["direction", "upstream"],
)
ATTEMPTS = Counter(
    "sidecar_attempts_total",
    "Attempts sent to endpoints, by the outcome the policies saw",
    ["direction", "upstream", "endpoint", "outcome"],
)
LOCAL_ERRORS = Counter(
    "sidecar_local_errors_total",
    "Errors the sidecar made itself (the x-sidecar-error reason)",
    ["direction", "upstream", "reason"],
)
CHANNELS_OPEN = Gauge("sidecar_channels_open", "Pooled upstream channels open")
APP_HEALTHY = Gauge("sidecar_app_healthy", "1 when the local app answers its health check")
DRAINING = Gauge("sidecar_draining", "1 while the sidecar drains")
H2_ABUSE = Counter(
    "sidecar_h2_abuse_total",
    "HTTP/2 abuse limits tripped on callers' connections (rapid_reset, "
    "continuation_flood, header_too_large, hpack_bomb, control_flood, empty_frames, "
    "slow_preface, slow_headers, slow_frame, idle_timeout, max_connections)",
    ["direction", "kind"],
)
