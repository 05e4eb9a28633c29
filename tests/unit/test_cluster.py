"""The Cluster API the data plane relies on: diff updates, snapshot, repr, config factory."""

from __future__ import annotations

import random

from sidecar.breaker import BreakerState
from sidecar.cluster import Cluster
from sidecar.config import parse_config
from sidecar.endpoint import Endpoint
from sidecar.health import HealthCheckState
from sidecar.outcome import Outcome
from tests.unit.lbutil import cluster, ep


def test_diff_update_keeps_host_state() -> None:
    """An endpoint present before and after an update keeps in-flight, EWMA and breaker."""
    c = cluster("peak_ewma")
    c.update("a", [ep(1), ep(2), ep(3)], 0.0)
    h = c.host(ep(1).key)
    assert h is not None
    h.start(1.0)
    h.start(1.0)
    h.finish(Outcome.SUCCESS, 0.25, 1.5)
    c.update("a", [Endpoint(ep(1).host, ep(1).port, "a", 10, 7), ep(4)], 2.0)
    same = c.host(ep(1).key)
    assert same is h and h.in_flight == 1 and h.ewma.estimate == 0.25
    assert h.endpoint.weight == 7
    assert c.host(ep(2).key) is None and c.host(ep(4).key) is not None
    assert len(c.hosts) == 2


def test_update_of_one_site_leaves_the_other() -> None:
    """Updating site b does not touch site a's hosts."""
    c = cluster("random")
    c.update("a", [ep(1)], 0.0)
    c.update("b", [ep(2, site="b")], 0.0)
    c.update("b", [], 1.0)
    assert [h.endpoint for h in c.hosts] == [ep(1)]


def test_empty_cluster_picks_none() -> None:
    """No endpoints: pick says None (the data plane answers no_endpoints)."""
    assert cluster().pick(0.0) is None


def test_snapshot_shows_endpoints_and_tier_shares() -> None:
    """snapshot() lists every endpoint's fields and each tier's current share."""
    c = cluster("peak_ewma")
    c.update("a", [ep(1, weight=5)], 0.0)
    c.update("b", [ep(2, site="b")], 0.0)
    snap = c.snapshot(0.0)
    e = snap["endpoints"][0]
    shown = "address site priority weight tier in_flight ewma_ms breaker healthy"
    assert set(shown.split()) <= set(e)
    assert e["tier"] == "a/p10" and e["breaker"] == "closed" and e["weight"] == 5
    assert [(t["tier"], t["share_percent"]) for t in snap["tiers"]] == [
        ("a/p10", 100.0),
        ("b/p10", 0.0),
    ]


def test_repr_is_readable() -> None:
    """repr(cluster) shows tiers, shares, addresses, weights and breaker states."""
    c = cluster("round_robin")
    c.update("a", [ep(1, weight=3)], 0.0)
    c.pick(0.0)
    assert repr(c) == "<Cluster up round_robin [a/p10 100%: 10.10.0.1:8000 w=3 closed]>"


def test_from_config() -> None:
    """Cluster.from_config takes lb, hash key, tiers and breaker settings from the YAML."""
    cfg = parse_config(
        {
            "upstreams": {
                "playlist": {
                    "lb": "ring_hash",
                    "hash_key": "x-user",
                    "overprovisioning_factor": 2.0,
                    "breaker": {"fail_max": 2},
                    "health_check": {"unhealthy_threshold": 3},
                }
            }
        }
    )
    c = Cluster.from_config("playlist", cfg.upstreams["playlist"], ["lon", "sto"], random.Random(0))
    assert (c.lb, c.hash_key_name, c.overprovisioning_factor) == ("ring_hash", "x-user", 2.0)
    c.update("lon", [Endpoint("10.0.0.1", 1, "lon"), Endpoint("10.0.0.2", 1, "lon")], 0.0)
    h = c.pick(0.0, hash_key=b"u1")
    assert h is not None and isinstance(h.health, HealthCheckState)
    h.start(0.0)
    h.finish(Outcome.CONNECT_FAILED, 0.0, 0.0)
    h.start(0.0)
    h.finish(Outcome.CONNECT_FAILED, 0.0, 0.0)
    assert h.breaker_state is BreakerState.OPEN


def test_health_state_thresholds() -> None:
    """Health flips only after `threshold` results in a row."""
    s = HealthCheckState(unhealthy_threshold=2, healthy_threshold=2)
    assert not s.record(False, 0) and s.healthy
    assert not s.record(True, 1)
    assert not s.record(False, 2)
    assert s.record(False, 3) and not s.healthy
    assert not s.record(True, 4) and s.record(True, 5) and s.healthy
