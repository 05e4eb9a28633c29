"""Balancers: which host of one tier takes the next request, chosen per upstream by `lb:`.

Pure (no I/O). A small registry by name, as Envoy picks its load balancer policy:
the cluster builds one balancer per tier over that tier's pickable hosts and
rebuilds it only when the set changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sidecar.balancer.base import Balancer, Candidate, effective_weights
from sidecar.balancer.ewma import PeakEwma
from sidecar.balancer.p2c import LeastRequestBalancer, PeakEwmaBalancer
from sidecar.balancer.ring_hash import RingHashBalancer
from sidecar.balancer.round_robin import RoundRobinBalancer
from sidecar.balancer.weighted_random import RandomBalancer

BALANCERS: dict[str, type[Balancer]] = {
    cls.name: cls
    for cls in (
        PeakEwmaBalancer,
        LeastRequestBalancer,
        RoundRobinBalancer,
        RandomBalancer,
        RingHashBalancer,
    )
}
DEFAULT = "peak_ewma"


def make_balancer(name: str, hosts: Sequence[Candidate], rng: random.Random) -> Balancer:
    """Build the balancer called `name` (a `lb:` value) over `hosts`."""
    try:
        cls = BALANCERS[name]
    except KeyError:
        raise ValueError(f"unknown lb {name!r}; choose one of {', '.join(BALANCERS)}") from None
    return cls(hosts, rng)


__all__ = [
    "BALANCERS",
    "DEFAULT",
    "Balancer",
    "Candidate",
    "PeakEwma",
    "effective_weights",
    "make_balancer",
]
