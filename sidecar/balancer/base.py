"""The balancer seam: what a balancer sees of a host, and what it must answer.

Pure (no I/O). A balancer is built over one fixed list of candidates (one tier's
pickable hosts) and rebuilt by the cluster whenever that list changes, so every
per-pick cost here must be independent of how many hosts there are: weighted
sampling is a bisect over prefix sums, never a scan.

SRV weights (RFC 2782, "Weight"): larger weights get proportionally more picks;
weight 0 "should have a very small chance of being selected" when other records
have weight > 0, so it is replaced by 1% of the smallest positive weight; when
every weight is 0 they are all equal.
"""

from __future__ import annotations

import abc
import bisect
import itertools
import random
from collections.abc import Collection, Sequence
from typing import ClassVar, Protocol

from sidecar.balancer.ewma import PeakEwma
from sidecar.endpoint import Endpoint

Key = tuple[str, int]

# Share of a weight-0 record relative to the lightest positive weight (RFC 2782).
ZERO_WEIGHT_FRACTION = 0.01


class Candidate(Protocol):
    """The part of a cluster host a balancer reads."""

    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def ewma(self) -> PeakEwma: ...


def effective_weights(weights: Sequence[int]) -> list[float]:
    """SRV weights as sampling weights, with RFC 2782's rule for weight 0."""
    positive = [w for w in weights if w > 0]
    if not positive:
        return [1.0] * len(weights)
    tiny = min(positive) * ZERO_WEIGHT_FRACTION
    return [float(w) if w > 0 else tiny for w in weights]


class WeightedSampler:
    """Draw an index with probability proportional to its weight, in O(log n)."""

    __slots__ = ("_cum", "_n", "_total", "_uniform")

    def __init__(self, weights: Sequence[float]) -> None:
        self._n = len(weights)
        self._uniform = len(set(weights)) <= 1
        self._cum = list(itertools.accumulate(weights))
        self._total = self._cum[-1] if self._cum else 0.0

    def draw(self, rng: random.Random) -> int:
        if self._uniform:
            return rng.randrange(self._n)
        i = bisect.bisect_right(self._cum, rng.random() * self._total)
        return min(i, self._n - 1)

    def draw_other(self, rng: random.Random, first: int) -> int:
        """A second index different from `first` (sampling without replacement)."""
        if self._uniform:
            return (first + 1 + rng.randrange(self._n - 1)) % self._n
        for _ in range(8):  # rejection is cheap unless one weight dominates
            j = self.draw(rng)
            if j != first:
                return j
        return (first + 1 + rng.randrange(self._n - 1)) % self._n


class Balancer(abc.ABC):
    """Chooses one of a fixed list of hosts for each request."""

    name: ClassVar[str]

    def __init__(self, hosts: Sequence[Candidate], rng: random.Random) -> None:
        self.hosts = list(hosts)
        self.rng = rng

    @abc.abstractmethod
    def pick(
        self, now: float, hash_key: bytes | None, exclude: Collection[Key]
    ) -> Candidate | None:
        """One host for one attempt, never one whose key is in `exclude`."""

    def _fallback(self, exclude: Collection[Key]) -> Candidate | None:
        """Weighted random over what `exclude` leaves: only retries get here."""
        left = [h for h in self.hosts if h.endpoint.key not in exclude]
        if not left:
            return None
        weights = effective_weights([h.endpoint.weight for h in left])
        return left[WeightedSampler(weights).draw(self.rng)]
