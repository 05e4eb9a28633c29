"""Metrics read from the mesh's state at scrape time: endpoints by site and state,
attempts and failures per endpoint, the retry budget's balance."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from sidecar.admin.state_metrics import StateCollector
from sidecar.cluster import Cluster
from sidecar.config import Breaker, HealthCheck, UpstreamConfig
from sidecar.endpoint import Endpoint
from sidecar.outcome import Outcome
from sidecar.policy_adapters import default_policies
from sidecar.route import Route


def test_endpoints_by_state_and_site_and_the_budget() -> None:
    """One endpoint ejected by its breaker, one failing its health check, two healthy;
    a site with none still shows zeros; the budget shows what retries it allows."""
    config = UpstreamConfig(
        breaker=Breaker(fail_max=2, max_ejection_percent=50),
        health_check=HealthCheck(unhealthy_threshold=1),
        retries={"budget_percent": 20, "min_retries_per_s": 1, "budget_window_s": 10},
    )
    cluster = Cluster.from_config("playlist", config, ["lon3", "sto3", "ams1"], random.Random(1))
    cluster.update("lon3", [Endpoint("10.0.0.1", 1, "lon3"), Endpoint("10.0.0.2", 1, "lon3")], 0)
    cluster.update("sto3", [Endpoint("10.0.1.1", 1, "sto3"), Endpoint("10.0.1.2", 1, "sto3")], 0)
    sick = cluster.host(("10.0.0.1", 1))
    assert sick is not None
    for t in (1.0, 2.0):
        sick.start(t)
        sick.finish(Outcome.CONNECT_FAILED, 0.001, t)
    cluster.record_health_check(("10.0.1.2", 1), False, 3.0)
    route = Route.from_config(
        "playlist", config, cluster, default_policies().calls("playlist", config)
    )
    collector = StateCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    owner = object()
    collector.watch(owner, "playlistview", "lon3", {"playlist": cluster}, {"playlist": route})
    text = generate_latest(registry).decode()

    def value(sample: str) -> float:
        line = next(s for s in text.splitlines() if s.startswith(sample + " "))
        return float(line.rpartition(" ")[2])

    up = 'upstream="playlist"'
    assert value(f'sidecar_endpoints{{site="lon3",state="ejected",{up}}}') == 1
    assert value(f'sidecar_endpoints{{site="lon3",state="healthy",{up}}}') == 1
    assert value(f'sidecar_endpoints{{site="sto3",state="unhealthy",{up}}}') == 1
    assert value(f'sidecar_endpoints{{site="sto3",state="healthy",{up}}}') == 1
    assert value(f'sidecar_endpoints{{site="ams1",state="healthy",{up}}}') == 0
    ep = f'endpoint="10.0.0.1:1",site="lon3",{up}'
    assert value(f"sidecar_endpoint_attempts_total{{{ep}}}") == 2
    assert value(f"sidecar_endpoint_failures_total{{{ep}}}") == 2
    assert value('sidecar_info{service="playlistview",site="lon3"}') == 1
    # no calls yet: the floor alone, min_retries_per_s x budget_window_s
    assert value(f"sidecar_retry_budget_remaining{{{up}}}") == 10
    collector.unwatch(owner)
    assert "sidecar_endpoints{" not in generate_latest(registry).decode()
