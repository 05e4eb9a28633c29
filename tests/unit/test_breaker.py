"""Per-endpoint circuit breakers in the cluster: trip, eject, probe, back off, cap (fake clock)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from sidecar.breaker import BreakerGroup, BreakerState
from sidecar.breaker.metrics import BreakerMetrics
from sidecar.cluster import Cluster, Host
from sidecar.config import Breaker
from sidecar.outcome import Outcome
from tests.unit.lbutil import cluster, ep, shares


def _fail(h: Host, n: int, now: float, outcome: Outcome = Outcome.UNAVAILABLE) -> None:
    for _ in range(n):
        h.start(now)
        h.finish(outcome, 0.01, now)


def _three(cfg: Breaker | None = None, upstream: str = "up") -> tuple[Cluster, list[Host]]:
    cfg = cfg or Breaker(fail_max=3, reset_timeout_s=10)
    c = Cluster(upstream, ("a",), random.Random(1), lb="round_robin", breaker=cfg)
    c.update("a", [ep(1), ep(2), ep(3)], 0.0)
    hosts = [c.host(ep(i).key) for i in (1, 2, 3)]
    assert all(hosts)
    return c, hosts  # type: ignore[return-value]


def test_opens_after_fail_max_and_gets_no_traffic() -> None:
    """fail_max consecutive failures open the breaker; then the endpoint gets no picks."""
    c, (bad, *_) = _three()
    _fail(bad, 2, 1.0)
    assert bad.breaker_state is BreakerState.CLOSED
    _fail(bad, 1, 1.0)
    assert bad.breaker_state is BreakerState.OPEN
    assert bad.endpoint.address not in shares(c, 300, now=5.0)


def test_application_errors_and_cancels_do_not_count() -> None:
    """NOT_FOUND-like successes reset the count; CANCELLED is ignored."""
    _, (bad, *_) = _three()
    _fail(bad, 2, 1.0)
    _fail(bad, 5, 1.0, Outcome.CANCELLED)
    _fail(bad, 1, 1.0, Outcome.SUCCESS)
    _fail(bad, 2, 1.0)
    assert bad.breaker_state is BreakerState.CLOSED


def test_one_probe_after_reset_timeout_closes_on_success() -> None:
    """After reset_timeout exactly one probe goes through; its success closes the breaker."""
    c, (bad, *_) = _three()
    _fail(bad, 3, 0.0)
    assert bad.endpoint.address not in shares(c, 100, now=9.9)
    probe = c.pick(10.0)
    assert probe is bad and bad.breaker_state is BreakerState.HALF_OPEN
    probe.start(10.0)
    # while the probe is out, nobody else is sent there
    others = [c.pick(10.1) for _ in range(50)]
    assert bad not in others
    probe.finish(Outcome.SUCCESS, 0.01, 10.2)
    assert bad.breaker_state is BreakerState.CLOSED
    assert bad.endpoint.address in shares(c, 100, now=10.3)


def test_repeated_trips_grow_open_time_capped() -> None:
    """Each failed probe doubles the open time (10, 20, 40 s) up to max_reset_timeout_s."""
    cfg = Breaker(fail_max=3, reset_timeout_s=10, max_reset_timeout_s=35)
    c, (bad, *_) = _three(cfg)
    _fail(bad, 3, 0.0)
    now, gaps = 0.0, []
    for _ in range(4):
        t = now
        while c.pick(t) is not bad:
            t += 0.5
        gaps.append(t - now)
        bad.start(t)
        bad.finish(Outcome.UNAVAILABLE, 0.01, t)
        now = t
    assert gaps == [10.0, 20.0, 35.0, 35.0]


def test_probe_that_never_returns_does_not_wedge() -> None:
    """A probe whose result never comes back is replaced after another open period."""
    c, (bad, *_) = _three()
    _fail(bad, 3, 0.0)
    assert c.pick(10.0) is bad
    assert bad not in [c.pick(15.0) for _ in range(20)]
    assert c.pick(20.0) is bad


def test_max_ejection_percent_caps_open_breakers() -> None:
    """With 50% of 3 endpoints, only one breaker may be open; the second is held closed."""
    c, (a, b, _) = _three()
    _fail(a, 3, 0.0)
    _fail(b, 10, 0.0)
    assert a.breaker_state is BreakerState.OPEN
    assert b.breaker_state is BreakerState.CLOSED
    assert c.snapshot(0.0)["ejected"] == 1
    # once a's breaker closes again, b trips on its next failure
    probe = c.pick(10.0)
    assert probe is a
    a.start(10.0)
    a.finish(Outcome.SUCCESS, 0.01, 10.0)
    _fail(b, 1, 10.0)
    assert b.breaker_state is BreakerState.OPEN


def test_single_endpoint_is_never_ejected() -> None:
    """floor(1 x 50%) = 0: the only endpoint of an upstream keeps its traffic."""
    c = cluster("random", breaker=Breaker(fail_max=1))
    c.update("a", [ep(1)], 0.0)
    h = c.pick(0.0)
    assert h is not None
    _fail(h, 5, 0.0)
    assert h.breaker_state is BreakerState.CLOSED and c.pick(1.0) is h


def test_state_and_transitions_are_exported() -> None:
    """sidecar_breaker_state and sidecar_breaker_transitions_total follow the breaker."""
    registry = CollectorRegistry()
    c = Cluster(
        "metrics-up",
        ("a",),
        random.Random(1),
        lb="round_robin",
        breaker=Breaker(fail_max=3, reset_timeout_s=10),
        breaker_metrics=BreakerMetrics(registry),
    )
    c.update("a", [ep(1), ep(2), ep(3)], 0.0)
    bad = c.host(ep(1).key)
    assert bad is not None
    labels = {"upstream": "metrics-up", "endpoint": bad.endpoint.address}

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    assert value("sidecar_breaker_state") == 0
    _fail(bad, 3, 0.0)
    assert value("sidecar_breaker_state") == 2
    assert value("sidecar_breaker_transitions_total", to="open") == 1
    c.pick(10.0)
    assert value("sidecar_breaker_state") == 1
    c.update("a", [ep(2), ep(3)], 11.0)  # endpoint gone: its series goes too
    assert value("sidecar_breaker_state") is None


def test_group_is_independent_of_the_cluster() -> None:
    """The breaker wrapper works on its own, with the caller's clock."""
    g = BreakerGroup("solo", Breaker(fail_max=2, reset_timeout_s=1))
    g.size = 2
    b = g.new("x:1")
    b.record(Outcome.TIMEOUT, 100.0)
    b.record(Outcome.CONNECT_FAILED, 100.0)
    assert b.state is BreakerState.OPEN and not b.probe_due(100.9) and b.probe_due(101.0)


def test_peer_shedding_does_not_trip_the_breaker() -> None:
    """Drops by a busy peer's admission neither open nor reset the breaker."""
    g = BreakerGroup("busy", Breaker(fail_max=2, reset_timeout_s=1))
    g.size = 2
    b = g.new("x:1")
    b.record(Outcome.UNAVAILABLE, 100.0)
    for _ in range(10):
        b.record(Outcome.OVERLOADED, 100.0)
    assert b.state is BreakerState.CLOSED
    b.record(Outcome.UNAVAILABLE, 100.0)  # the drops did not reset the count
    assert b.state is BreakerState.OPEN
