"""Balancers: weights, latency awareness, ring-hash stability (seeded, fake clock)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.balancer import BALANCERS, effective_weights
from sidecar.balancer.ewma import PeakEwma
from sidecar.outcome import Outcome
from tests.unit.lbutil import cluster, ep, shares, simulate

N = 10_000


@pytest.mark.parametrize("lb", ["peak_ewma", "least_request", "round_robin", "random", "ring_hash"])
def test_weights_60_40(lb: str) -> None:
    """SRV weights 60/40 give 60/40 +- 3% over 10,000 picks with every weighted balancer."""
    c = cluster(lb)
    c.update("a", [ep(1, weight=60), ep(2, weight=40)], 0.0)
    kw = {}
    if lb == "ring_hash":
        keys = iter([str(i).encode() for i in range(N)])
        seen = {ep(1).address: 0, ep(2).address: 0}
        for _ in range(N):
            h = c.pick(0.0, hash_key=next(keys))
            assert h is not None
            seen[h.endpoint.address] += 1
    else:
        seen = shares(c, N, **kw)
    assert abs(seen[ep(1).address] / N - 0.60) <= 0.03
    assert abs(seen[ep(2).address] / N - 0.40) <= 0.03


@pytest.mark.parametrize("lb", ["round_robin", "random", "peak_ewma"])
def test_weight_zero_gets_a_very_small_share(lb: str) -> None:
    """RFC 2782: weight 0 beside positive weights is chosen rarely, but not never."""
    c = cluster(lb)
    c.update("a", [ep(1, weight=1), ep(2, weight=0)], 0.0)
    seen = shares(c, N)
    assert seen[ep(2).address] / N < 0.03


def test_all_zero_weights_are_equal() -> None:
    """RFC 2782: when every weight is 0 the records are equally likely."""
    assert effective_weights([0, 0, 0]) == [1.0, 1.0, 1.0]
    assert effective_weights([0, 10]) == [0.1, 10.0]


def test_round_robin_is_smooth() -> None:
    """Weights 5/1/1 interleave (as nginx: a a b a c a a): never 5 turns in a row."""
    c = cluster("round_robin")
    c.update("a", [ep(1, weight=5), ep(2, weight=1), ep(3, weight=1)], 0.0)
    seq = [c.pick(0.0) for _ in range(70)]
    run = longest = 0
    for h in seq:
        run = run + 1 if h is not None and h.endpoint == ep(1, weight=5) else 0
        longest = max(longest, run)
    assert longest <= 4
    assert sum(1 for h in seq if h is not None and h.endpoint.weight == 5) == 50


def test_slow_endpoint_gets_little_peak_ewma_traffic() -> None:
    """A 10x slower endpoint gets under 10% of peak_ewma traffic."""
    c = cluster("peak_ewma", breaker=None)
    c.update("a", [ep(1), ep(2), ep(3)], 0.0)
    slow = ep(3).address
    seen = simulate(c, lambda a: (0.2 if a == slow else 0.02, Outcome.SUCCESS))
    assert seen[slow] / sum(seen.values()) < 0.10


def test_least_request_avoids_busy_endpoint() -> None:
    """least_request sends less to an endpoint that holds requests 10x longer."""
    c = cluster("least_request", breaker=None)
    c.update("a", [ep(1), ep(2), ep(3)], 0.0)
    slow = ep(3).address
    seen = simulate(c, lambda a: (0.2 if a == slow else 0.02, Outcome.SUCCESS))
    assert seen[slow] / sum(seen.values()) < 0.25


def test_failing_fast_endpoint_does_not_attract_traffic() -> None:
    """peak_ewma counts a fast failure as slow: a 1 ms UNAVAILABLE host gets under 5%."""
    c = cluster("peak_ewma", breaker=None)
    c.update("a", [ep(1), ep(2), ep(3)], 0.0)
    bad = ep(3).address
    seen = simulate(
        c, lambda a: (0.001, Outcome.UNAVAILABLE) if a == bad else (0.02, Outcome.SUCCESS)
    )
    assert seen[bad] / sum(seen.values()) < 0.05


def test_ewma_peaks_up_and_decays() -> None:
    """A slow sample is believed at once; the estimate then decays with time."""
    e = PeakEwma(tau=10.0)
    e.observe(0.01, 0.0)
    e.observe(0.5, 1.0)
    assert e.value(1.0) == 0.5
    assert e.value(11.0) == pytest.approx(0.5 / 2.718281828, rel=1e-3)
    e.observe(0.001, 1.0, failed=True)
    assert e.estimate >= 1.0


def _ring_owners(keys: list[bytes], n: int, drop: int | None = None) -> dict[bytes, str]:
    c = cluster("ring_hash")
    c.update("a", [ep(i) for i in range(n) if i != drop], 0.0)
    out = {}
    for k in keys:
        h = c.pick(0.0, hash_key=k)
        assert h is not None
        out[k] = h.endpoint.address
    return out


def test_ring_hash_moves_about_one_nth() -> None:
    """Removing one of 10 endpoints moves only that endpoint's keys, about 1/10."""
    keys = [f"user-{i}".encode() for i in range(4000)]
    before = _ring_owners(keys, 10)
    after = _ring_owners(keys, 10, drop=4)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == ep(4).address for k in moved)
    assert 0.05 <= len(moved) / len(keys) <= 0.15
    # and adding it back moves those same keys home
    assert _ring_owners(keys, 10) == before


def test_ring_hash_same_key_same_host() -> None:
    """The same key always lands on the same host, in a fresh cluster too."""
    a = _ring_owners([b"k1", b"k2"], 5)
    b = _ring_owners([b"k1", b"k2"], 5)
    assert a == b


@settings(max_examples=40, deadline=None)
@given(
    lb=st.sampled_from(sorted(BALANCERS)),
    weights=st.lists(st.integers(0, 65535), min_size=1, max_size=8),
    excluded=st.sets(st.integers(0, 7)),
    seed=st.integers(0, 2**32 - 1),
)
def test_pick_never_returns_excluded(
    lb: str, weights: list[int], excluded: set[int], seed: int
) -> None:
    """Any balancer, any weights: a pick is never excluded, and None only if all are."""
    c = cluster(lb, seed=seed)
    eps = [ep(i, weight=w) for i, w in enumerate(weights)]
    c.update("a", eps, 0.0)
    ex = {eps[i].key for i in excluded if i < len(eps)}
    rng = random.Random(seed)
    for _ in range(20):
        h = c.pick(0.0, hash_key=str(rng.random()).encode(), exclude=ex)
        if len(ex) == len(eps):
            assert h is None
        else:
            assert h is not None and h.endpoint.key not in ex
