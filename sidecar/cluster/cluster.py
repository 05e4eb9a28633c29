"""The cluster: one upstream's endpoints across sites, and the pick.

Pure (no I/O). Discovery hands whole endpoint sets per site to `update()`, which
applies them as a diff so unchanged endpoints keep their state (in-flight count,
latency history, breaker). The data plane asks `pick()` for a host, calls
`host.start(now)` before the attempt and `host.finish(outcome, latency, now)`
after it, exactly once.

NOTE: the pick is plain round robin for now; balancers and tiers plug in here.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.endpoint import Endpoint
from sidecar.outcome import Outcome


@dataclass(eq=False, slots=True)
class Host:
    """An endpoint with the state the policies keep for it."""

    endpoint: Endpoint
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    last_used: float = 0.0

    def start(self, now: float) -> None:
        self.in_flight += 1
        self.requests += 1
        self.last_used = now

    def finish(self, outcome: Outcome, latency_s: float, now: float) -> None:
        self.in_flight -= 1
        self.last_used = now
        if outcome.is_failure:
            self.failures += 1

    @property
    def available(self) -> bool:
        return True

    def snapshot(self, now: float) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "address": ep.address,
            "site": ep.site,
            "priority": ep.priority,
            "weight": ep.weight,
            "target": ep.target,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
        }


@dataclass(eq=False)
class Cluster:
    name: str
    sites: Sequence[str] = ("",)
    rng: random.Random = field(default_factory=random.Random)
    _hosts: dict[tuple[str, int], Host] = field(default_factory=dict)
    _by_site: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    _next: int = 0

    def update(self, site: str, endpoints: Iterable[Endpoint], now: float) -> None:
        """Replace `site`'s endpoint set; unchanged endpoints keep their Host."""
        new = {ep.key: ep for ep in endpoints}
        old = self._by_site.get(site, set())
        for key in old - new.keys():
            self._hosts.pop(key, None)
        for key, ep in new.items():
            host = self._hosts.get(key)
            if host is None:
                self._hosts[key] = Host(ep)
            elif host.endpoint != ep:
                host.endpoint = ep  # weight/priority changed: same state, new fields
        self._by_site[site] = set(new)

    @property
    def hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def pick(
        self,
        now: float,
        *,
        hash_key: bytes | None = None,
        exclude: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset(),
    ) -> Host | None:
        """Choose a host for one attempt, or None when nothing can take it."""
        candidates = [
            h for h in self._hosts.values() if h.available and h.endpoint.key not in exclude
        ]
        if not candidates:
            return None
        self._next += 1
        return candidates[self._next % len(candidates)]

    def snapshot(self, now: float) -> dict[str, Any]:
        """What `/clusters` shows for this upstream."""
        return {
            "name": self.name,
            "sites": list(self.sites),
            "endpoints": [h.snapshot(now) for h in self._hosts.values()],
        }

    def __repr__(self) -> str:
        eps = ", ".join(h.endpoint.address for h in self._hosts.values())
        return f"<Cluster {self.name} [{eps}]>"
