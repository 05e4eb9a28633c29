"""Discovery state → xDS resources (LDS, RDS, CDS, EDS) for proxyless gRPC and Envoy.

Pure: no I/O. Input is one `UpstreamSnapshot` per upstream (what discovery, health
checks and breakers know right now); output is a `Resources` table of protobuf
messages keyed by type URL and resource name, ready for the ADS server.

Per upstream NAME (the gRPC target is `xds:///NAME`) we emit:

- Listener NAME: an `api_listener` holding an HttpConnectionManager whose last (and
  only) HTTP filter is the router; gRPC NACKs a listener without it. Routes come by
  RDS (RouteConfiguration NAME over ADS) or inline.
- RouteConfiguration NAME: one virtual host `*`: the config's `routes` (header
  matchers, weighted clusters: rds_rules.py), then prefix "" → cluster NAME.
- Cluster NAME: type EDS over ADS, `service_name` NAME, lb policy as mapped below;
  with mTLS, an UpstreamTlsContext as gRPC's A29 reads it (`upstream_tls`).
- ClusterLoadAssignment NAME: one locality per (site, SRV priority); priorities
  mapped, never copied (see `_priority_map`).

And one RouteConfiguration `outbound` routing every upstream's gRPC services by path
prefix, for an Envoy whose static listener asks RDS for it (Envoy takes an
`api_listener` only from its bootstrap, so it cannot use the gRPC Listeners).

Only fields gRPC's proxyless client understands are set (grpc doc/grpc_xds_features.md),
plus two it ignores and Envoy needs: the cluster's HTTP/2 protocol options and the
EDS overprovisioning factor.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, message, wrappers_pb2

from sidecar.config import RouteConfig
from sidecar.endpoint import Endpoint
from sidecar.xds.rds_rules import rds_routes

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_URLS = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
# LDS and CDS allow a wildcard subscription (empty resource_names); RDS and EDS do not.
WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})

ENVOY_ROUTE_NAME = "outbound"
CERT_PROVIDER = "default"  # the certificate provider instance a client's bootstrap names
_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Our balancer names → xDS lb policies gRPC supports. gRPC has no peak EWMA and no
# random; LEAST_REQUEST is not in grpcio's C-core, so everything that is not a
# consistent hash becomes ROUND_ROBIN, which both gRPC and Envoy honour.
LB_POLICIES: Mapping[str, int] = {
    "round_robin": cluster_pb2.Cluster.ROUND_ROBIN,
    "ring_hash": cluster_pb2.Cluster.RING_HASH,
    "peak_ewma": cluster_pb2.Cluster.ROUND_ROBIN,
    "least_request": cluster_pb2.Cluster.ROUND_ROBIN,
    "random": cluster_pb2.Cluster.ROUND_ROBIN,
}


@dataclass(frozen=True, slots=True)
class EndpointState:
    """An endpoint and whether it may take traffic (health check and breaker agree)."""

    endpoint: Endpoint
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class UpstreamSnapshot:
    """Everything the xDS server needs to know about one upstream at one moment.

    `sites` is the failover order, local site first; endpoints from a site not
    listed come after the listed ones, in name order.
    """

    endpoints: tuple[EndpointState, ...]
    sites: tuple[str, ...] = ()
    lb: str = "round_robin"
    hash_key: str = "x-hash-key"
    grpc_services: tuple[str, ...] = ()
    overprovisioning_factor: float = 1.4
    # mTLS (gRPC A29): RE2 patterns of the SPIFFE IDs the endpoints may present; None:
    # plaintext (no `tls`, or the upstream's `tls: false`)
    peer_id_regexes: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        endpoints: Iterable[Endpoint],
        sites: Iterable[str] = (),
        *,
        unhealthy: Iterable[tuple[str, int]] = (),
        **kwargs: Any,
    ) -> UpstreamSnapshot:
        """Build from bare endpoints; those whose `key` is in `unhealthy` are marked so."""
        bad = set(unhealthy)
        states = tuple(EndpointState(e, e.key not in bad) for e in endpoints)
        return cls(endpoints=states, sites=tuple(sites), **kwargs)


@dataclass(frozen=True)
class Resources:
    """Type URL → resource name → message; `skipped` says what was left out and why."""

    by_type: Mapping[str, Mapping[str, message.Message]]
    skipped: tuple[str, ...] = field(default=())

    def get(self, type_url: str) -> Mapping[str, message.Message]:
        return self.by_type.get(type_url, {})


def _pack(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    # `ads` (not `self`): both gRPC and Envoy then fetch on the one ADS stream.
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _site_rank(sites: tuple[str, ...], endpoints: Iterable[EndpointState]) -> dict[str, int]:
    order = list(dict.fromkeys(sites))
    extra = sorted({s.endpoint.site for s in endpoints} - set(order))
    return {site: i for i, site in enumerate(order + extra)}


def _priority_map(
    rank: Mapping[str, int], endpoints: Iterable[EndpointState]
) -> dict[tuple[str, int], int]:
    """(site, SRV priority) → xDS priority 0, 1, 2, … with no gaps.

    Sites are the outer tier (local first), SRV priority the inner one (RFC 2782:
    lower is preferred). gRPC rejects priorities that skip a number or do not
    start at 0, so SRV priorities 10 and 20 become 0 and 1; they are never copied.
    """
    keys = {(s.endpoint.site, s.endpoint.priority) for s in endpoints}
    ordered = sorted(keys, key=lambda k: (rank[k[0]], k[1]))
    return {key: i for i, key in enumerate(ordered)}


def endpoint_weight(srv_weight: int) -> int:
    """SRV weight → endpoint `load_balancing_weight`, which must be ≥ 1.

    RFC 2782 gives weight 0 "a very small chance" when others are heavier; 1 is the
    smallest weight xDS can say.
    """
    return max(1, srv_weight)


def _usable(snap: UpstreamSnapshot) -> list[EndpointState]:
    """IP literals only, each address once (its most preferred tier wins).

    gRPC refuses host names as endpoint addresses, and an address listed twice
    (say, in two sites) is refused as a duplicate.
    """
    seen: set[tuple[str, int]] = set()
    rank = _site_rank(snap.sites, snap.endpoints)
    out = []
    for state in sorted(snap.endpoints, key=lambda s: (rank[s.endpoint.site], s.endpoint.priority)):
        if is_ip_literal(state.endpoint.host) and state.endpoint.key not in seen:
            seen.add(state.endpoint.key)
            out.append(state)
    return out


def build_cla(
    name: str, snap: UpstreamSnapshot, *, endpoint_localities: bool = True
) -> endpoint_pb2.ClusterLoadAssignment:
    """EDS: sites → localities, (site order, SRV priority) → priorities, health → status.

    With `endpoint_localities` (the default) every endpoint is its own locality within
    its (site, SRV priority) tier, weighted by its SRV weight. Why: gRPC's xDS
    round_robin ignores endpoint weights (measured with grpcio 1.85: weights 1:9 gave
    50:50) but honours locality weights, so this is how proxyless clients follow
    RFC 2782 weights. Envoy ignores locality weights unless the cluster asks for
    locality-weighted balancing (ours does not) and uses the endpoint weights, which
    are set too. Ring hash already weighs endpoints, and would multiply the two, so
    it keeps one locality per tier.
    """
    usable = _usable(snap)
    rank = _site_rank(snap.sites, usable)
    prio = _priority_map(rank, usable)
    split = endpoint_localities and snap.lb != "ring_hash"
    groups: dict[tuple[str, int, str], list[EndpointState]] = {}
    for state in usable:
        e = state.endpoint
        groups.setdefault((e.site, e.priority, e.address if split else ""), []).append(state)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for key in sorted(groups, key=lambda k: (prio[k[:2]], k[2])):
        site, srv_priority, address = key
        members = sorted(groups[key], key=lambda s: s.endpoint.key)
        sub_zone = f"srv-priority-{srv_priority}" + (f"/{address}" if address else "")
        lle = cla.endpoints.add(
            # sub_zone keeps localities unique across priorities (and endpoints).
            # gRPC silently drops a locality without a weight.
            locality=base_pb2.Locality(zone=site, sub_zone=sub_zone),
            priority=prio[(site, srv_priority)],
        )
        total = 0
        for state in members:
            weight = endpoint_weight(state.endpoint.weight)
            total += weight
            lle.lb_endpoints.add(
                endpoint=endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(
                            address=state.endpoint.host, port_value=state.endpoint.port
                        )
                    ),
                    hostname=state.endpoint.target.rstrip("."),
                ),
                health_status=(
                    health_check_pb2.HEALTHY if state.healthy else health_check_pb2.UNHEALTHY
                ),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=weight),
            )
        lle.load_balancing_weight.value = min(total, 2**32 - 1)
    cla.policy.overprovisioning_factor.value = round(snap.overprovisioning_factor * 100)
    return cla


def build_cluster(name: str, snap: UpstreamSnapshot) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_ads(), service_name=name
        ),
        lb_policy=LB_POLICIES.get(snap.lb, cluster_pb2.Cluster.ROUND_ROBIN),
    )
    cluster.connect_timeout.FromMilliseconds(1000)
    # Envoy must speak HTTP/2 upstream for gRPC; gRPC ignores this field.
    h2 = http_protocol_options_pb2.HttpProtocolOptions()
    h2.explicit_http_config.http2_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[_HTTP_PROTOCOL_OPTIONS].CopyFrom(_pack(h2))
    if snap.peer_id_regexes is not None:
        cluster.transport_socket.name = "envoy.transport_sockets.tls"
        cluster.transport_socket.typed_config.CopyFrom(_pack(upstream_tls(snap.peer_id_regexes)))
    return cluster


def upstream_tls(peer_id_regexes: Iterable[str]) -> tls_pb2.UpstreamTlsContext:
    """gRPC A29 (xDS-based security for proxyless clients): the client presents the
    certificate of its bootstrap's certificate provider instance `default` (the
    file_watcher plugin over the same three files as a sidecar's `tls:` block), trusts
    that instance's CA bundle, and accepts a peer whose URI SAN matches one of the
    patterns: the upstream's service in any site, or its `identities` (README, "Mutual
    TLS and authorization")."""
    ctx = tls_pb2.UpstreamTlsContext()
    common = ctx.common_tls_context
    common.tls_certificate_provider_instance.instance_name = CERT_PROVIDER
    validation = common.validation_context
    validation.ca_certificate_provider_instance.instance_name = CERT_PROVIDER
    for regex in peer_id_regexes:
        matcher = validation.match_subject_alt_names.add()
        matcher.safe_regex.google_re2.SetInParent()
        matcher.safe_regex.regex = regex
    common.alpn_protocols.append("h2")
    return ctx


def _route_to(cluster: str, snap: UpstreamSnapshot, prefix: str) -> route_components_pb2.Route:
    action = route_components_pb2.RouteAction(cluster=cluster)
    if snap.lb == "ring_hash":
        # gRPC supports header hash policies (A42); the metadata key our balancer uses.
        action.hash_policy.add(
            header=route_components_pb2.RouteAction.HashPolicy.Header(header_name=snap.hash_key)
        )
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=prefix), route=action
    )


def build_route(
    name: str, snap: UpstreamSnapshot, rules: Sequence[RouteConfig] = ()
) -> route_pb2.RouteConfiguration:
    """`xds:///name`'s routes: the config's `routes` (rds_rules.py), then all to `name`."""
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name, domains=["*"], routes=[*rds_routes(rules), _route_to(name, snap, "")]
            )
        ],
    )


def build_envoy_route(
    snapshots: Mapping[str, UpstreamSnapshot], rules: Sequence[RouteConfig] = ()
) -> route_pb2.RouteConfiguration:
    """One route table for an Envoy sidecar: the config's `routes`, then `/pkg.Service/`
    prefix → upstream cluster."""
    routes = rds_routes(rules) + [
        _route_to(name, snap, f"/{service}/")
        for name, snap in sorted(snapshots.items())
        for service in snap.grpc_services
    ]
    return route_pb2.RouteConfiguration(
        name=ENVOY_ROUTE_NAME,
        virtual_hosts=[
            route_components_pb2.VirtualHost(name=ENVOY_ROUTE_NAME, domains=["*"], routes=routes)
        ],
    )


def build_listener(
    name: str, route: route_pb2.RouteConfiguration | None = None
) -> listener_pb2.Listener:
    """LDS for `xds:///name`: RDS by name, or the given route inline."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router())
            )
        ],
    )
    if route is None:
        hcm.rds.config_source.CopyFrom(_ads())
        hcm.rds.route_config_name = name
    else:
        hcm.route_config.CopyFrom(route)
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=_pack(hcm))
    )


def build_resources(
    snapshots: Mapping[str, UpstreamSnapshot],
    *,
    inline_routes: bool = False,
    endpoint_localities: bool = True,
    rules: Sequence[RouteConfig] = (),
) -> Resources:
    """All four resource types for every upstream, plus Envoy's `outbound` route table;
    `rules`: the config's `routes`, ahead of each upstream's own route."""
    listeners: dict[str, message.Message] = {}
    routes: dict[str, message.Message] = {}
    clusters: dict[str, message.Message] = {}
    loads: dict[str, message.Message] = {}
    skipped: list[str] = []
    for name, snap in sorted(snapshots.items()):
        route = build_route(name, snap, rules)
        listeners[name] = build_listener(name, route if inline_routes else None)
        if not inline_routes:
            routes[name] = route
        clusters[name] = build_cluster(name, snap)
        loads[name] = build_cla(name, snap, endpoint_localities=endpoint_localities)
        kept = {id(s) for s in _usable(snap)}
        skipped.extend(
            f"{name}: {s.endpoint.address} in site {s.endpoint.site!r} left out: "
            + ("listed twice" if is_ip_literal(s.endpoint.host) else "not an IP literal")
            for s in snap.endpoints
            if id(s) not in kept
        )
    if ENVOY_ROUTE_NAME not in snapshots:
        routes[ENVOY_ROUTE_NAME] = build_envoy_route(snapshots, rules)
    return Resources(
        by_type={LISTENER: listeners, ROUTE: routes, CLUSTER: clusters, ENDPOINT: loads},
        skipped=tuple(skipped),
    )
