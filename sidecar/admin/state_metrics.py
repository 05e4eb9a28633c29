"""Metrics read from the mesh's state when `/metrics` is scraped, not kept per call.

No I/O of its own. The values already live in the pure core: each endpoint's `Host`
counts its attempts and failures, its breaker and health check say whether it takes
traffic, each upstream's retry budget knows its balance. Reading them at scrape time
adds nothing to a call's path, and gives the per-site view the per-call metrics lack
(a call's labels name its upstream and method; the site is the endpoint's).

    sidecar_info{service,site}                             1; this sidecar's own site
    sidecar_endpoints{upstream,site,state}                 endpoints by state: healthy,
                                                           ejected (breaker open or
                                                           half-open), unhealthy (failing
                                                           its active health check)
    sidecar_endpoint_attempts_total{upstream,site,endpoint}   attempts sent to it
    sidecar_endpoint_failures_total{upstream,site,endpoint}   those that failed
    sidecar_retry_budget_remaining{upstream}               retries the budget still allows
                                                           in its window (upstreams with
                                                           retries only)
    sidecar_asyncio_tasks                                  tasks alive in the event loop

Each sidecar registers a collector of its own on its registry (sidecar/metrics.py),
adds its mesh with `watch` at start and takes it away with `unwatch` at stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sidecar.breaker import BreakerState
from sidecar.cluster import Cluster

STATES = ("healthy", "ejected", "unhealthy")


class _Watched:
    __slots__ = ("clusters", "routes", "service", "site")

    def __init__(
        self, service: str, site: str, clusters: Mapping[str, Cluster], routes: Mapping[str, Any]
    ) -> None:
        self.service = service
        self.site = site
        self.clusters = clusters
        self.routes = routes


class StateCollector(Collector):
    def __init__(self) -> None:
        self._watched: dict[int, _Watched] = {}

    def watch(
        self,
        owner: object,
        service: str,
        site: str,
        clusters: Mapping[str, Cluster],
        routes: Mapping[str, Any],
    ) -> None:
        self._watched[id(owner)] = _Watched(service, site, clusters, routes)

    def unwatch(self, owner: object) -> None:
        self._watched.pop(id(owner), None)

    def describe(self) -> list[Any]:
        return []  # the families depend on what is watched: read at collect time only

    def collect(self) -> Iterator[Any]:
        now = time.monotonic()
        info = GaugeMetricFamily(
            "sidecar_info",
            "This sidecar: its service and site (always 1)",
            labels=["service", "site"],
        )
        endpoints = GaugeMetricFamily(
            "sidecar_endpoints",
            "Endpoints per upstream and site, by state (healthy, ejected, unhealthy)",
            labels=["upstream", "site", "state"],
        )
        attempts = CounterMetricFamily(
            "sidecar_endpoint_attempts",
            "Attempts sent to each endpoint (counted while discovery holds it)",
            labels=["upstream", "site", "endpoint"],
        )
        failures = CounterMetricFamily(
            "sidecar_endpoint_failures",
            "Attempts to each endpoint that failed (the outcome breakers and EWMA see)",
            labels=["upstream", "site", "endpoint"],
        )
        budget = GaugeMetricFamily(
            "sidecar_retry_budget_remaining",
            "Retries the upstream's retry budget still allows in its window",
            labels=["upstream"],
        )
        for watched in list(self._watched.values()):
            info.add_metric([watched.service, watched.site], 1)
            for name, cluster in watched.clusters.items():
                counts = {(site, s): 0 for site in cluster.sites for s in STATES}
                for host in cluster.hosts:
                    site = host.endpoint.site
                    counts[site, _state(host)] = counts.get((site, _state(host)), 0) + 1
                    labels = [name, site, host.endpoint.address]
                    attempts.add_metric(labels, host.requests)
                    failures.add_metric(labels, host.failures)
                for (site, state), n in counts.items():
                    endpoints.add_metric([name, site, state], n)
                remaining = _budget_remaining(watched.routes.get(name), now)
                if remaining is not None:
                    budget.add_metric([name], remaining)
        tasks = GaugeMetricFamily(
            "sidecar_asyncio_tasks",
            "asyncio tasks alive in the sidecar's event loop (a leak shows as growth)",
        )
        with contextlib.suppress(RuntimeError):  # scraped off the loop: not known
            tasks.add_metric([], len(asyncio.all_tasks()))
        yield from (info, endpoints, attempts, failures, budget, tasks)


def _state(host: Any) -> str:
    if host.breaker_state is not BreakerState.CLOSED:
        return "ejected"
    if host.health is not None and not host.health.healthy:
        return "unhealthy"
    return "healthy"


def _budget_remaining(route: Any, now: float) -> float | None:
    """The balance of the route's retry budget, or None (no retries configured)."""
    policy = getattr(getattr(route, "calls", None), "policy", None)
    retry = getattr(policy, "retry", None)
    found = getattr(retry, "budget", None)
    return None if found is None else max(0.0, float(found.balance(now)))
