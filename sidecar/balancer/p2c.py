"""Power of two choices: sample two hosts, send to the less loaded one.

Pure (no I/O). Mitzenmacher, "The Power of Two Choices in Randomized Load
Balancing" (2001): comparing two random candidates instead of one cuts the worst
queue from O(log n / log log n) to O(log log n), at O(1) cost per pick, with no
shared view of every host's load. The two candidates are drawn by SRV weight
without replacement; when their loads tie the first drawn wins, so an idle
cluster is split exactly by weight.

- `peak_ewma` (default): load = latency EWMA x (in-flight + 1), Finagle's and
  Linkerd's cost. A host with no sample yet costs 0 when idle and a penalty when
  busy (Finagle), so a new host is tried one request at a time.
- `least_request`: load = in-flight (Envoy's LEAST_REQUEST with two choices).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from sidecar.balancer.base import Balancer, Candidate, Key, WeightedSampler, effective_weights

UNKNOWN_BUSY_COST = 1e6  # Finagle's "Penalty" for a busy host without a latency sample


class _P2C(Balancer):
    def __init__(self, hosts: Sequence[Candidate], rng: random.Random) -> None:
        super().__init__(hosts, rng)
        self._sampler = WeightedSampler(effective_weights([h.endpoint.weight for h in hosts]))

    def cost(self, host: Candidate, now: float) -> float:
        raise NotImplementedError

    def pick(
        self, now: float, hash_key: bytes | None, exclude: Collection[Key]
    ) -> Candidate | None:
        hosts = self.hosts
        n = len(hosts)
        if n == 0:
            return None
        if n == 1:
            only = hosts[0]
            return None if only.endpoint.key in exclude else only
        i = self._sampler.draw(self.rng)
        j = self._sampler.draw_other(self.rng, i)
        a, b = hosts[i], hosts[j]
        if exclude:
            if a.endpoint.key in exclude:
                a = b
            if b.endpoint.key in exclude:
                b = a
            if a.endpoint.key in exclude:
                return self._fallback(exclude)
        return b if self.cost(b, now) < self.cost(a, now) else a


class PeakEwmaBalancer(_P2C):
    name = "peak_ewma"

    def cost(self, host: Candidate, now: float) -> float:
        latency = host.ewma.value(now)
        if latency == 0.0:
            return UNKNOWN_BUSY_COST * host.in_flight
        return latency * (host.in_flight + 1)


class LeastRequestBalancer(_P2C):
    name = "least_request"

    def cost(self, host: Candidate, now: float) -> float:
        return float(host.in_flight)
