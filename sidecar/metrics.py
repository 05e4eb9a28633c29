"""Every Prometheus metric a sidecar exports, on a registry of its own.

Declarations only. Each package declares its metrics beside its code, as a class that
takes the registry (breaker/metrics.py, retry/metrics.py, discovery/metrics.py,
shedding/metrics.py, access_log.py, reload/metrics.py, tls/metrics.py, authz/metrics.py,
tracing/metrics.py);
`Metrics` makes one of each on one registry, and the composition root hands each part
the metrics it writes (sidecar/app.py; the in-process client, sidecar/client/channel.py,
makes its own). So two sidecars in one process (the tests run several) never write to
each other's series, and `/metrics` serves exactly this sidecar's. `registry=None`
registers nowhere: parts built alone, in unit tests, get metrics that nobody scrapes.

Labels: direction (`outbound` | `inbound`), upstream (the upstream name; `app` inbound;
`-` when no route), method (full path; `-` for unrouted calls so callers cannot grow the
label set), code (gRPC status name).
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidecar.access_log import AccessLogMetrics
from sidecar.authz.metrics import AuthzMetrics
from sidecar.breaker.metrics import BreakerMetrics
from sidecar.discovery.metrics import DiscoveryMetrics
from sidecar.reload.metrics import ReloadMetrics
from sidecar.retry.metrics import RetryMetrics
from sidecar.shedding.metrics import SheddingMetrics
from sidecar.tls.metrics import TlsMetrics
from sidecar.tracing.metrics import TracingMetrics

# Proxy latencies run from well under a millisecond to a deadline of seconds.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class PlaneMetrics:
    """What the relay's listeners count per call (sidecar/h2relay/plane.py)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.requests = Counter(
            "sidecar_requests_total",
            "Calls handled by the sidecar, by final status",
            ["direction", "upstream", "method", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "sidecar_request_duration_seconds",
            "Time from a call's arrival to its final status, retries included",
            ["direction", "upstream", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "sidecar_requests_in_flight",
            "Calls being handled now",
            ["direction", "upstream"],
            registry=r,
        )
        self.attempts = Counter(
            "sidecar_attempts_total",
            "Attempts sent to endpoints, by the outcome the policies saw",
            ["direction", "upstream", "endpoint", "outcome"],
            registry=r,
        )
        self.local_errors = Counter(
            "sidecar_local_errors_total",
            "Errors the sidecar made itself (the x-sidecar-error reason)",
            ["direction", "upstream", "reason"],
            registry=r,
        )
        self.h2_abuse = Counter(
            "sidecar_h2_abuse_total",
            "HTTP/2 abuse limits tripped on callers' connections (rapid_reset, "
            "continuation_flood, header_too_large, hpack_bomb, control_flood, empty_frames, "
            "slow_preface, slow_headers, slow_frame, idle_timeout, max_connections)",
            ["direction", "kind"],
            registry=r,
        )
        self.mirror_calls = Counter(
            "sidecar_mirror_calls_total",
            "Shadow copies of calls (routes[].mirror) by how they ended, apart from the calls "
            "(result: ok, failed, timeout, shed, too_large, abandoned)",
            ["upstream", "result"],
            registry=r,
        )


class ProcessMetrics:
    """The sidecar's own state (sidecar/app.py, sidecar/health/app_checker.py)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.channels_open = Gauge(
            "sidecar_channels_open", "Pooled upstream channels open", registry=registry
        )
        self.app_healthy = Gauge(
            "sidecar_app_healthy",
            "1 when the local app answers its health check",
            registry=registry,
        )
        self.draining = Gauge("sidecar_draining", "1 while the sidecar drains", registry=registry)


class Metrics:
    """One sidecar's metrics, all on `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.plane = PlaneMetrics(registry)
        self.process = ProcessMetrics(registry)
        self.breakers = BreakerMetrics(registry)
        self.retries = RetryMetrics(registry)
        self.discovery = DiscoveryMetrics(registry)
        self.shedding = SheddingMetrics(registry)
        self.access_log = AccessLogMetrics(registry)
        self.reload = ReloadMetrics(registry)
        self.tls = TlsMetrics(registry)
        self.authz = AuthzMetrics(registry)
        self.tracing = TracingMetrics(registry)

    @classmethod
    def on(cls, registry: CollectorRegistry) -> Metrics:
        """The one `Metrics` of a registry that is not only ours (an app's, where several
        in-process clients publish): a family registers once per registry."""
        found = _ON.get(registry)
        if found is None:
            found = _ON[registry] = cls(registry)
        return found


_ON: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
