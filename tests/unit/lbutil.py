"""Helpers for the balancing tests: endpoints, clusters and a tiny load simulator."""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable

from sidecar.cluster import Cluster
from sidecar.config import Breaker
from sidecar.endpoint import Endpoint
from sidecar.outcome import Outcome


def ep(i: int, site: str = "a", priority: int = 10, weight: int = 1) -> Endpoint:
    return Endpoint(f"10.{priority % 256}.{i // 256}.{i % 256}", 8000, site, priority, weight)


def cluster(
    lb: str = "peak_ewma", sites: tuple[str, ...] = ("a", "b"), seed: int = 1, **kw: object
) -> Cluster:
    return Cluster("up", sites, random.Random(seed), lb=lb, **kw)  # type: ignore[arg-type]


def no_breakers() -> dict[str, object]:
    return {"breaker": None}


def big_breaker() -> Breaker:
    return Breaker(fail_max=10_000)


def shares(c: Cluster, n: int, now: float = 0.0, **pick_kw: object) -> Counter[str]:
    """Pick `n` times at a fixed time, finishing each attempt at once."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        h = c.pick(now, **pick_kw)  # type: ignore[arg-type]
        assert h is not None
        h.start(now)
        h.finish(Outcome.SUCCESS, 0.01, now)
        seen[h.endpoint.address] += 1
    return seen


def simulate(
    c: Cluster,
    service: Callable[[str], tuple[float, Outcome]],
    *,
    requests: int = 3000,
    interval_s: float = 0.002,
) -> Counter[str]:
    """Open-loop load: one request every `interval_s`; `service(address)` gives
    (latency, outcome). Returns picks per address."""
    pending: list[tuple[float, int, str, Outcome, float]] = []
    seen: Counter[str] = Counter()
    hosts = {h.endpoint.address: h for h in c.hosts}
    for i in range(requests):
        now = i * interval_s
        while pending and pending[0][0] <= now:
            t, _, addr, outcome, latency = heapq.heappop(pending)
            hosts[addr].finish(outcome, latency, t)
        h = c.pick(now)
        assert h is not None
        h.start(now)
        latency, outcome = service(h.endpoint.address)
        heapq.heappush(pending, (now + latency, i, h.endpoint.address, outcome, latency))
        seen[h.endpoint.address] += 1
    return seen
