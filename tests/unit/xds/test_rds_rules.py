"""The config's `routes` as RDS routes (sidecar/xds/rds_rules.py): each field as gRPC's
xDS client reads it, in order, ahead of the upstream's own route."""

from __future__ import annotations

from typing import Any

from sidecar.config import RouteConfig, parse_config
from sidecar.xds import UpstreamSnapshot
from sidecar.xds.rds_rules import rds_route
from sidecar.xds.resources import ENVOY_ROUTE_NAME, ROUTE, build_resources

SVC = "music.playlist.v1.Playlist"


def routes(*specs: dict[str, Any]) -> list[RouteConfig]:
    ups = {n: {"endpoints": [], "grpc_services": [SVC] if n == "a" else []} for n in "abcd"}
    return list(parse_config({"upstreams": ups, "routes": list(specs)}).routes)


def test_matchers_and_targets() -> None:
    (spec,) = routes(
        {
            "match": {
                "service": SVC,
                "headers": [
                    {"name": "x-a", "exact": "1"},
                    {"name": "x-b", "prefix": "p", "invert": True},
                    {"name": "x-c", "regex": "u-[0-9]+"},
                    {"name": "x-d", "present": False},
                ],
            },
            "split": [
                {"upstream": "a", "weight": 9},
                {"upstream": "b", "weight": 0},
                {"upstream": "c", "weight": 1},
            ],
            "timeout_ms": 250,
            "mirror": {"upstream": "d", "percent": 12.5},
        }
    )
    route = rds_route(spec)
    assert route.match.prefix == f"/{SVC}/"
    a, b, c, d = route.match.headers
    assert (a.string_match.exact, a.invert_match) == ("1", False)
    assert (b.string_match.prefix, b.invert_match) == ("p", True)
    assert c.string_match.safe_regex.regex == "u-[0-9]+"
    assert c.string_match.safe_regex.HasField("google_re2")
    assert (d.present_match, d.invert_match) == (True, True)  # absent = present, inverted
    weights = [(w.name, w.weight.value) for w in route.route.weighted_clusters.clusters]
    assert weights == [("a", 9), ("c", 1)]  # zero weights left out
    assert route.route.max_stream_duration.max_stream_duration.ToMilliseconds() == 250
    (mirror,) = route.route.request_mirror_policies
    assert (mirror.cluster, mirror.runtime_fraction.default_value.numerator) == ("d", 125_000)


def test_method_path_and_catch_all() -> None:
    by_method, catch_all = routes(
        {"match": {"method": f"/{SVC}/Get"}, "upstream": "b"}, {"upstream": "c"}
    )
    assert rds_route(by_method).match.path == f"/{SVC}/Get"
    assert rds_route(by_method).route.cluster == "b"
    assert rds_route(catch_all).match.WhichOneof("path_specifier") == "prefix"
    assert rds_route(catch_all).match.prefix == ""


def test_rules_come_first_in_every_route_configuration() -> None:
    rules = routes({"match": {"headers": [{"name": "x-canary", "exact": "1"}]}, "upstream": "b"})
    snaps = {n: UpstreamSnapshot.of([], ("local",)) for n in "ab"}
    resources = build_resources(snaps, rules=rules)
    for name in ("a", "b", ENVOY_ROUTE_NAME):
        vhost = resources.by_type[ROUTE][name].virtual_hosts[0]
        first = vhost.routes[0]
        assert first.route.cluster == "b" and first.match.headers[0].name == "x-canary"
    a_routes = resources.by_type[ROUTE]["a"].virtual_hosts[0].routes
    assert [r.route.cluster for r in a_routes] == ["b", "a"]
