"""Weighted random: each pick independent, probability proportional to SRV weight.

Pure (no I/O). The RFC 2782 selection rule without its per-query ordering; a
bisect over prefix sums keeps a pick O(log n).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

from sidecar.balancer.base import Balancer, Candidate, Key, WeightedSampler, effective_weights


class RandomBalancer(Balancer):
    name = "random"

    def __init__(self, hosts: Sequence[Candidate], rng: random.Random) -> None:
        super().__init__(hosts, rng)
        self._sampler = WeightedSampler(effective_weights([h.endpoint.weight for h in hosts]))

    def pick(
        self, now: float, hash_key: bytes | None, exclude: Collection[Key]
    ) -> Candidate | None:
        if not self.hosts:
            return None
        host = self.hosts[self._sampler.draw(self.rng)]
        if exclude and host.endpoint.key in exclude:
            return self._fallback(exclude)
        return host
