"""Consistent hashing on a request metadata value (Karger et al. 1997; Envoy's RING_HASH).

Pure (no I/O). Every host owns points on a 64-bit ring, VNODES_PER_HOST of
them scaled by its SRV weight; a request goes to the owner of the first point at
or after the hash of its key. A host's points depend only on its address (a
PRNG seeded with it), so adding or removing one of N hosts moves only the keys
that host owns, about 1/N, and every sidecar builds the same ring. Requests
without a key are spread at random; a retry (key excluded) walks on clockwise.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Collection, Sequence

from sidecar.balancer.base import Balancer, Candidate, Key, effective_weights

# Points per host of average weight. Fixed, not scaled to the ring size, so adding
# or removing a host leaves every other host's points where they were.
VNODES_PER_HOST = 160
MAX_RING_POINTS = 100_000  # bounds rebuild time and memory for very large upstreams
_POINTS_CACHE_MAX = 20_000
_points_cache: dict[tuple[str, int], list[int]] = {}


def key_hash(key: bytes) -> int:
    """A hash that is the same in every process (unlike `hash()`)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _points(address: str, count: int) -> list[int]:
    cached = _points_cache.get((address, count))
    if cached is None:
        if len(_points_cache) > _POINTS_CACHE_MAX:
            _points_cache.clear()
        gen = random.Random(address)  # str seeds are hashed with SHA-512: stable
        cached = [gen.getrandbits(64) for _ in range(count)]
        _points_cache[(address, count)] = cached
    return cached


class RingHashBalancer(Balancer):
    name = "ring_hash"

    def __init__(self, hosts: Sequence[Candidate], rng: random.Random) -> None:
        super().__init__(hosts, rng)
        weights = effective_weights([h.endpoint.weight for h in hosts])
        per_host = min(VNODES_PER_HOST, MAX_RING_POINTS // max(len(hosts), 1))
        mean = sum(weights) / len(weights) if weights else 1.0
        ring: list[tuple[int, int]] = []
        for i, (host, w) in enumerate(zip(hosts, weights, strict=True)):
            count = max(1, round(per_host * w / mean))
            ring.extend((p, i) for p in _points(host.endpoint.address, count))
        ring.sort()
        self._points = [p for p, _ in ring]
        self._owner = [i for _, i in ring]

    def pick(
        self, now: float, hash_key: bytes | None, exclude: Collection[Key]
    ) -> Candidate | None:
        if not self.hosts:
            return None
        if hash_key is None:
            host = self.hosts[self.rng.randrange(len(self.hosts))]
            return self._fallback(exclude) if host.endpoint.key in exclude else host
        n = len(self._points)
        start = bisect.bisect_left(self._points, key_hash(hash_key))
        for step in range(n):
            host = self.hosts[self._owner[(start + step) % n]]
            if host.endpoint.key not in exclude:
                return host
        return None
