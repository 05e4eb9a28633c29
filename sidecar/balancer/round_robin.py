"""Smooth weighted round robin by SRV weight.

Pure (no I/O). nginx's smooth weighted round robin spreads a heavy host's turns
evenly (weights 5,1,1 give a a b a c a a, not a a a a a b c) but scans every host
per pick. We get the same smooth interleaving from an earliest-deadline-first
schedule (Envoy's EdfScheduler): each host's next turn is due 1/weight after its
last one, and a heap hands out the earliest, so a pick is O(log n) and 1,000
hosts cost about what 10 do. Each host starts at a random phase within its first
period so that many sidecars do not all start on the same host.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Collection, Sequence

from sidecar.balancer.base import Balancer, Candidate, Key, effective_weights


class RoundRobinBalancer(Balancer):
    name = "round_robin"

    def __init__(self, hosts: Sequence[Candidate], rng: random.Random) -> None:
        super().__init__(hosts, rng)
        weights = effective_weights([h.endpoint.weight for h in hosts])
        self._period = [1.0 / w for w in weights]
        # (deadline, index): the index breaks ties in a stable order
        self._heap = [(rng.random() * p, i) for i, p in enumerate(self._period)]
        heapq.heapify(self._heap)

    def pick(
        self, now: float, hash_key: bytes | None, exclude: Collection[Key]
    ) -> Candidate | None:
        if not self._heap:
            return None
        deadline, i = self._heap[0]
        heapq.heapreplace(self._heap, (deadline + self._period[i], i))
        host = self.hosts[i]
        if exclude and host.endpoint.key in exclude:
            return self._fallback(exclude)
        return host
