"""Prometheus metrics of config reloads, on the registry they are given.

No I/O of its own. One `ReloadMetrics` per sidecar (sidecar/metrics.py's `Metrics`);
`registry=None` registers nowhere (a reloader built alone, in a unit test); the
in-process client counts its reloads on the app's registry, as its other metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ReloadMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.reloads = Counter(
            "sidecar_config_reloads_total",
            "Config reloads (SIGHUP, POST /reload), by result: applied, unchanged, refused",
            ["result"],
            registry=registry,
        )
