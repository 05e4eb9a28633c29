"""Failover tiers: how much of an upstream's traffic each (site, SRV priority) tier gets.

Pure (no I/O). Envoy's priority-level load ("Priority levels" in its load
balancing docs), with tiers ordered local site first, then by SRV priority
(RFC 2782: lower priority values are tried first):

    health(t)   = min(100, factor x 100 x healthy(t) / total(t))    factor = 1.4
    normalized  = min(100, sum of health(t))
    load(t)     = min(100 - load of earlier tiers, health(t) x 100 / normalized)

So a tier takes everything while at least 1/factor (about 71%) of it is healthy,
and as it falls below that its traffic spills to the next tier in proportion,
not all at once. When `normalized` falls below the panic threshold the cluster
is in panic: with so few healthy hosts left, routing only to them would overload
them, so traffic is balanced over every host, healthy or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TierLoad:
    loads: tuple[float, ...]  # percent of traffic per tier, summing to 100 (or all 0)
    normalized_health: float  # percent
    panic: bool


def tier_loads(
    counts: Sequence[tuple[int, int]],
    overprovisioning_factor: float = 1.4,
    panic_threshold_percent: float = 50.0,
) -> TierLoad:
    """`counts` is (healthy, total) per tier, in failover order."""
    health = [
        min(100.0, overprovisioning_factor * 100.0 * healthy / total) if total else 0.0
        for healthy, total in counts
    ]
    normalized = min(100.0, sum(health))
    panic = normalized < panic_threshold_percent and any(total for _, total in counts)
    if normalized == 0.0:
        return TierLoad(tuple(0.0 for _ in counts), 0.0, panic)
    loads: list[float] = []
    left = 100.0
    for h in health:
        load = min(left, h * 100.0 / normalized)
        loads.append(load)
        left -= load
    # rounding can leave a sliver: give it to the last tier that takes traffic
    if left > 0:
        for i in range(len(loads) - 1, -1, -1):
            if loads[i] > 0:
                loads[i] += left
                break
    return TierLoad(tuple(loads), normalized, panic)
