"""The demo's layout: every generated sidecar config passes the real schema, ports never clash."""

from __future__ import annotations

import itertools

from services import demo_plan


def test_plan_configs_validate_and_ports_are_unique() -> None:
    """Both sites, 2 instances per data service, every config accepted by sidecar.config."""
    plan = demo_plan.make_plan(itertools.count(30000), data_instances=2)
    configs = demo_plan.validate(plan)
    assert len(configs) == len(plan.instances) == 2 * (3 * 2 + 2)
    ports = [plan.registry_port]
    for inst in plan.instances:
        ports += [inst.app_port, inst.inbound_port, inst.admin_port]
        ports += [inst.outbound_port] if inst.outbound_port else []
    assert len(ports) == len(set(ports))
    view = next(c for c in configs if c.service == "playlistview" and c.site == "sto3")
    assert set(view.upstreams) == {"playlist", "metadata"}
    assert view.sites == ["sto3", "lon3"]  # local site first: failover tier
    ap = next(c for c in configs if c.service == "accesspoint")
    assert ap.upstreams["playlistview"].grpc_services == ["music.playlistview.v1.PlaylistView"]
    assert all(c.registration is not None for c in configs)


def test_a_given_registry_port_is_used_and_never_handed_to_an_instance() -> None:
    """--registry-port: every sidecar registers there; the port supply skips it."""
    plan = demo_plan.make_plan(itertools.count(30000), data_instances=1, registry_port=30002)
    assert plan.registry_port == 30002
    ports = {p for i in plan.instances for p in (i.app_port, i.inbound_port, i.admin_port)}
    assert 30002 not in ports and 30000 in ports  # the supply's first port goes to an instance
    for inst in plan.instances:
        assert inst.sidecar["registration"]["nameserver"] == "127.0.0.1:30002"
        assert inst.sidecar["discovery"]["nameservers"] == ["127.0.0.1:30002"]


def test_story_covers_the_run_in_order() -> None:
    """Phases are contiguous, start at 0, end at the duration, and tell the issue's story."""
    phases = demo_plan.story(60)
    assert phases[0].start_s == 0 and abs(phases[-1].end_s - 60) < 1e-6
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(phases))
    names = [p.name for p in phases]
    for step in ("kill-metadata", "slow-playlist", "lon3-playlist-down", "restored", "overload"):
        assert step in names
