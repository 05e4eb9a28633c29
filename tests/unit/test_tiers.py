"""Failover tiers: Envoy's overprovisioning rule, spill, panic (seeded, fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.balancer.tiers import tier_loads
from sidecar.cluster import Cluster
from sidecar.config import HealthCheck
from tests.unit.lbutil import cluster, ep, shares

N = 10_000


def _expected_p0(health_percent: float) -> float:
    """The formula, written out: P0 takes min(100, 1.4 x health); P1 (fully healthy) the rest."""
    return min(100.0, 1.4 * health_percent)


def _two_priorities(healthy_p0: int) -> Cluster:
    c = cluster("random", health_check=HealthCheck(unhealthy_threshold=1))
    p0 = [ep(i, priority=10) for i in range(10)]
    c.update("a", [*p0, *(ep(i, priority=20) for i in range(10))], 0.0)
    for e in p0[healthy_p0:]:
        c.record_health_check(e.key, False, 0.0)
    return c


@pytest.mark.parametrize("health", [100, 80, 50, 0])
def test_spill_matches_overprovisioning_formula(health: int) -> None:
    """At 100/80/50/0% healthy, P0 gets min(100, 1.4 x health)% and P1 the rest, +- 2%."""
    c = _two_priorities(health // 10)
    want = _expected_p0(health)
    assert c.tier_shares(0.0) == pytest.approx({"a/p10": want, "a/p20": 100 - want})
    seen = shares(c, N)
    p0 = sum(n for addr, n in seen.items() if addr.startswith("10.10."))
    assert abs(100 * p0 / N - want) <= 2.0


def test_lower_priority_gets_nothing_while_higher_is_healthy() -> None:
    """Priority 20 and the remote site get no picks while the local priority 10 is healthy."""
    c = cluster("peak_ewma")
    c.update("a", [ep(1, priority=10), ep(2, priority=10), ep(3, priority=20)], 0.0)
    c.update("b", [ep(4, site="b", priority=10)], 0.0)
    seen = shares(c, 2000)
    assert set(seen) == {ep(1).address, ep(2).address}


def test_local_site_before_remote_even_with_worse_priority() -> None:
    """Tiers order by site first: local priority 20 comes before remote priority 10."""
    c = cluster("random", sites=("a", "b"))
    c.update("b", [ep(1, site="b", priority=10)], 0.0)
    c.update("a", [ep(2, site="a", priority=20)], 0.0)
    assert list(c.tier_shares(0.0)) == ["a/p20", "b/p10"]
    assert c.tier_shares(0.0)["a/p20"] == 100.0


def test_panic_balances_over_all_hosts() -> None:
    """Below the panic threshold traffic goes to every host, unhealthy ones too."""
    c = cluster("random", health_check=HealthCheck(unhealthy_threshold=1))
    eps = [ep(i) for i in range(10)]
    c.update("a", eps, 0.0)
    for e in eps[:6]:
        c.record_health_check(e.key, False, 0.0)
    assert c.snapshot(0.0)["panic"] is False  # 40% x 1.4 = 56% >= 50%
    assert set(shares(c, 500)) == {e.address for e in eps[6:]}
    c.record_health_check(eps[6].key, False, 0.0)
    snap = c.snapshot(0.0)
    assert snap["panic"] is True  # 30% x 1.4 = 42% < 50%
    assert set(shares(c, 2000)) == {e.address for e in eps}


def test_health_check_recovery_brings_tier_back() -> None:
    """A host that passes health checks again is picked again (healthy_threshold=2)."""
    c = cluster("random", health_check=HealthCheck(unhealthy_threshold=1, healthy_threshold=2))
    c.update("a", [ep(1), ep(2)], 0.0)
    c.record_health_check(ep(1).key, False, 1.0)
    assert ep(1).address not in shares(c, 200)
    c.record_health_check(ep(1).key, True, 2.0)
    assert ep(1).address not in shares(c, 200)
    c.record_health_check(ep(1).key, True, 3.0)
    assert ep(1).address in shares(c, 200)


@given(
    counts=st.lists(
        st.tuples(st.integers(0, 50), st.integers(1, 50)).map(lambda t: (min(t), t[1])),
        min_size=1,
        max_size=5,
    ),
    factor=st.floats(1.0, 3.0),
)
def test_loads_sum_to_100_or_nothing(counts: list[tuple[int, int]], factor: float) -> None:
    """Loads are never negative, sum to 100 when anything is healthy, and fill in tier order."""
    result = tier_loads(counts, factor, 50.0)
    assert all(load >= 0 for load in result.loads)
    if any(h for h, _ in counts):
        assert sum(result.loads) == pytest.approx(100.0)
    else:
        assert sum(result.loads) == 0.0
    for i, (healthy, total) in enumerate(counts):
        if factor * healthy >= total and result.normalized_health > 0:
            assert sum(result.loads[i + 1 :]) == pytest.approx(0.0, abs=1e-9)
            break
