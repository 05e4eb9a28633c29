"""The pure diff of two configs (sidecar/reload/diff.py): key paths, claims, how an
upstream changed, whether discovery must be rebuilt, the version hash."""

from __future__ import annotations

from typing import Any

from sidecar.config import parse_config
from sidecar.reload.diff import (
    changed_paths,
    config_hash,
    covers,
    discovery_changed,
    unclaimed,
    upstream_changes,
)


def cfg(**upstream: Any) -> Any:
    base: dict[str, Any] = {"grpc_services": ["svc.A"], "endpoints": ["127.0.0.1:1"]}
    return parse_config({"outbound": {}, "upstreams": {"a": {**base, **upstream}}})


def test_changed_paths_are_leaves_and_lists_are_one_leaf() -> None:
    old = cfg()
    new = cfg(endpoints=["127.0.0.1:1", "127.0.0.1:2"], retries={"max_attempts": 2})
    assert changed_paths(old, new) == ["upstreams.a.endpoints", "upstreams.a.retries"]
    assert changed_paths(cfg(retries={}), cfg(retries={"max_attempts": 5})) == [
        "upstreams.a.retries.max_attempts"
    ]
    assert changed_paths(old, cfg()) == []


def test_an_added_section_is_one_path() -> None:
    old = cfg()
    new = parse_config(
        {
            "outbound": {},
            "upstreams": {
                "a": {"grpc_services": ["svc.A"], "endpoints": ["127.0.0.1:1"]},
                "b": {"endpoints": ["127.0.0.1:3"]},
            },
        }
    )
    assert changed_paths(old, new) == ["upstreams.b"]
    assert changed_paths(new, old) == ["upstreams.b"]
    with_inbound = parse_config({"inbound": {}, "outbound": {}, "upstreams": {}})
    assert "inbound" in changed_paths(parse_config({"outbound": {}}), with_inbound)


def test_covers_prefixes_and_one_key_wildcards() -> None:
    assert covers("upstreams", "upstreams.a.retries.max_attempts")
    assert covers("upstreams.*.faults", "upstreams.a.faults.delay.ms")
    assert not covers("upstreams.*.faults", "upstreams.a.retries")
    assert not covers("inbound.admission", "inbound")  # inbound turned on: not claimed
    assert not covers("outbound.listen", "outbound.listener")
    assert unclaimed(["log.format", "upstreams.a.lb"], ["upstreams"]) == ["log.format"]


def test_upstream_changes_say_what_to_rebuild() -> None:
    old = cfg()
    timeout = upstream_changes(old, cfg(timeout_ms=50))["a"]
    assert timeout.route and not timeout.cluster
    lb = upstream_changes(old, cfg(lb="round_robin"))["a"]
    assert lb.cluster and lb.route
    faults = upstream_changes(old, cfg(faults={"delay": {"percent": 5, "ms": 1}}))["a"]
    assert not faults.route and not faults.cluster
    endpoints = upstream_changes(old, cfg(endpoints=["127.0.0.1:9"]))["a"]
    assert endpoints.keys == {"endpoints"} and not endpoints.route and not endpoints.cluster
    assert upstream_changes(old, cfg()) == {}
    gone = upstream_changes(old, parse_config({"outbound": {}}))["a"]
    assert gone.removed and not gone.added


def test_discovery_is_rebuilt_only_when_what_it_looks_up_changes() -> None:
    old = cfg()
    assert not discovery_changed(old, cfg(timeout_ms=5))
    assert not discovery_changed(old, cfg(endpoints=["127.0.0.1:9"]))  # static either way
    assert discovery_changed(old, cfg(endpoints=None))
    dns = cfg(endpoints=None)
    assert discovery_changed(dns, dns.model_copy(update={"domain": "other.net"}))
    assert discovery_changed(dns, cfg(endpoints=None, srv_name="_a._tcp.x.net"))


def test_the_hash_follows_values_not_key_order() -> None:
    one = parse_config({"outbound": {"listen": "127.0.0.1:1"}, "site": "x"})
    two = parse_config({"site": "x", "outbound": {"listen": "127.0.0.1:1"}})
    assert config_hash(one) == config_hash(two)
    assert config_hash(one) != config_hash(one.model_copy(update={"site": "y"}))
