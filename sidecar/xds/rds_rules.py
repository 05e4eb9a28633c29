"""The config's `routes` as RDS routes, for proxyless gRPC clients and Envoy.

Pure (no I/O). Each `routes[]` entry becomes one `envoy.config.route.v3.Route`, in the
config's order and ahead of the upstream's own catch-all (resources.py), so a client
of `xds:///NAME` follows the same first-match rules as the sidecar's outbound listener
(sidecar/route_rules.py), with NAME where the sidecar falls back to grpc_services.
The fields used are those gRPC's xDS client reads (gRPC A28: path / prefix, header
matchers with `invert_match`; weighted clusters; `max_stream_duration`, A17):
- `match.service` → prefix `/service/`, `match.method` → path, neither → prefix "";
- `exact` / `prefix` → `string_match`; `regex` → `safe_regex` (RE2, as ours); `present`
  → `present_match` (present: false is an inverted present match);
- `upstream` → cluster; `split` → `weighted_clusters` (zero weights left out);
- `timeout_ms` → `max_stream_duration` (gRPC applies it as the call's deadline cap);
- `mirror` → `request_mirror_policies` (Envoy honours it; gRPC ignores it).
Not expressible there, and so not sent: `hash_on` (gRPC and Envoy pick a weighted
cluster at random per call, so the split is proportional but not sticky) and a route's
own `retries` (the clients keep the upstream's policy).
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from sidecar.config import HeaderMatch, RouteConfig


def _header(spec: HeaderMatch) -> rc.HeaderMatcher:
    if spec.present is not None:
        # present: false (absent) is present_match inverted
        return rc.HeaderMatcher(
            name=spec.name, present_match=True, invert_match=spec.invert != (not spec.present)
        )
    if spec.regex is not None:
        string = string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(
                google_re2=regex_pb2.RegexMatcher.GoogleRE2(), regex=spec.regex
            )
        )
    elif spec.prefix is not None:
        string = string_pb2.StringMatcher(prefix=spec.prefix)
    else:
        string = string_pb2.StringMatcher(exact=spec.exact or "")
    return rc.HeaderMatcher(name=spec.name, string_match=string, invert_match=spec.invert)


def rds_route(spec: RouteConfig) -> rc.Route:
    """One `routes[]` entry as an RDS Route."""
    m = spec.match
    match = rc.RouteMatch(headers=[_header(h) for h in m.headers])
    if m.method is not None:
        match.path = m.method
    elif m.service is not None:
        match.prefix = f"/{m.service}/"
    else:
        match.prefix = ""
    action = rc.RouteAction()
    if spec.split is not None:
        action.weighted_clusters.CopyFrom(
            rc.WeightedCluster(
                clusters=[
                    rc.WeightedCluster.ClusterWeight(
                        name=part.upstream, weight=wrappers_pb2.UInt32Value(value=part.weight)
                    )
                    for part in spec.split
                    if part.weight > 0
                ]
            )
        )
    else:
        action.cluster = spec.upstream or ""
    if spec.timeout_ms is not None:
        action.max_stream_duration.max_stream_duration.FromMilliseconds(round(spec.timeout_ms))
    mirror = spec.mirror
    if mirror is not None:
        fraction = percent_pb2.FractionalPercent(
            numerator=round(mirror.percent * 10_000),
            denominator=percent_pb2.FractionalPercent.MILLION,
        )
        action.request_mirror_policies.add(cluster=mirror.upstream).runtime_fraction.default_value.CopyFrom(fraction)  # fmt: skip
    return rc.Route(match=match, route=action)


def rds_routes(specs: Sequence[RouteConfig]) -> list[rc.Route]:
    return [rds_route(s) for s in specs]
