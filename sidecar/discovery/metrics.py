"""Prometheus metrics of discovery and registration, on the registry they are given.

No I/O of its own. One `DiscoveryMetrics` per sidecar (sidecar/metrics.py's `Metrics`);
`registry=None` registers nowhere. Label values: `result` is `ok`, `nxdomain`, `nodata`,
`unavailable` (target "."), or a failure reason (`timeout`, `servfail`, `refused`,
`unreachable`, `malformed`, `rcode`, `error`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DiscoveryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.lookups = Counter(
            "sidecar_dns_lookups_total",
            "SRV lookups by result (ok, nxdomain, timeout, ...)",
            ["result"],
            registry=r,
        )
        self.tcp_fallbacks = Counter(
            "sidecar_dns_tcp_fallbacks_total",
            "DNS answers truncated over UDP and fetched again over TCP",
            registry=r,
        )
        self.lookup_seconds = Histogram(
            "sidecar_dns_lookup_duration_seconds",
            "Time for one SRV lookup including address lookups",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.stale = Gauge(
            "sidecar_dns_stale",
            "1 while an upstream's endpoints in a site are the last good set kept through DNS "
            "errors",
            ["upstream", "site"],
            registry=r,
        )
        self.endpoints = Gauge(
            "sidecar_dns_endpoints",
            "Endpoints discovery holds per upstream and site",
            ["upstream", "site"],
            registry=r,
        )
        self.last_refresh = Gauge(
            "sidecar_dns_last_refresh_timestamp_seconds",
            "Unix time of the last DNS answer believed per upstream and site",
            ["upstream", "site"],
            registry=r,
        )
        self.registration_updates = Counter(
            "sidecar_registration_updates_total",
            "RFC 2136 updates sent by op (register, renew, deregister) and result (ok, or the "
            "error)",
            ["op", "result"],
            registry=r,
        )
        self.registered = Gauge(
            "sidecar_registration_registered",
            "1 while this instance's SRV record is held",
            registry=r,
        )
