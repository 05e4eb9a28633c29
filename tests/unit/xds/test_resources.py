"""The pure discovery → xDS mapping: priorities, localities, weights, health, names."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from hypothesis import given
from hypothesis import strategies as st

from sidecar.endpoint import Endpoint
from sidecar.xds.resources import (
    CLUSTER,
    ENDPOINT,
    ENVOY_ROUTE_NAME,
    LISTENER,
    ROUTE,
    UpstreamSnapshot,
    build_cla,
    build_resources,
)


def ep(host: str, site: str, priority: int = 10, weight: int = 5, port: int = 80) -> Endpoint:
    return Endpoint(host, port, site, priority, weight, f"{host}.")


def cla_of(snap: UpstreamSnapshot, *, split: bool = False) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality per (site, SRV priority) unless `split` (one per endpoint)."""
    return build_cla("playlist", snap, endpoint_localities=split)


def test_local_site_gets_priority_zero_and_srv_priorities_are_mapped() -> None:
    """Site order first, then SRV priority; xDS priorities run 0, 1, 2 with the local site at 0."""
    snap = UpstreamSnapshot.of(
        [ep("10.0.1.1", "b", 10), ep("10.0.0.1", "a", 20), ep("10.0.0.2", "a", 10)], ("a", "b")
    )
    cla = cla_of(snap)
    got = [(lle.priority, lle.locality.zone, lle.locality.sub_zone) for lle in cla.endpoints]
    assert got == [
        (0, "a", "srv-priority-10"),
        (1, "a", "srv-priority-20"),
        (2, "b", "srv-priority-10"),
    ]


def test_sites_not_listed_come_after_listed_ones_in_name_order() -> None:
    """An endpoint from an unlisted site is still served, after every listed site."""
    snap = UpstreamSnapshot.of(
        [ep("10.0.9.1", "z"), ep("10.0.8.1", "y"), ep("10.0.0.1", "a")], ("a",)
    )
    assert [lle.locality.zone for lle in cla_of(snap).endpoints] == ["a", "y", "z"]


def test_every_locality_has_a_positive_weight() -> None:
    """gRPC drops localities without load_balancing_weight; ours is the sum of endpoint weights."""
    snap = UpstreamSnapshot.of(
        [ep("10.0.0.1", "a", weight=0), ep("10.0.0.2", "a", weight=7)], ("a",)
    )
    (lle,) = cla_of(snap).endpoints
    assert lle.HasField("load_balancing_weight")
    assert lle.load_balancing_weight.value == 1 + 7


def test_srv_weight_zero_becomes_one_and_others_are_kept() -> None:
    """Endpoint weight 0 is invalid in xDS, so SRV weight 0 maps to 1; others pass through."""
    snap = UpstreamSnapshot.of(
        [ep("10.0.0.1", "a", weight=0), ep("10.0.0.2", "a", weight=60)], ("a",)
    )
    weights = {
        lb.endpoint.address.socket_address.address: lb.load_balancing_weight.value
        for lb in cla_of(snap).endpoints[0].lb_endpoints
    }
    assert weights == {"10.0.0.1": 1, "10.0.0.2": 60}


def test_unhealthy_endpoints_are_sent_as_unhealthy() -> None:
    """Health maps to health_status; unhealthy endpoints stay listed so priorities stay stable."""
    a1, a2 = ep("10.0.0.1", "a"), ep("10.0.0.2", "a")
    snap = UpstreamSnapshot.of([a1, a2], ("a",), unhealthy=[a1.key])
    statuses = {
        lb.endpoint.address.socket_address.address: lb.health_status
        for lb in cla_of(snap).endpoints[0].lb_endpoints
    }
    assert statuses == {
        "10.0.0.1": health_check_pb2.UNHEALTHY,
        "10.0.0.2": health_check_pb2.HEALTHY,
    }


def test_host_names_are_left_out_and_reported() -> None:
    """Only IP literals (v4 and v6) become endpoints; a host name is skipped with a reason."""
    snap = UpstreamSnapshot.of(
        [ep("::1", "a"), ep("db.example.net", "a"), ep("10.0.0.1", "a")], ("a",)
    )
    res = build_resources({"playlist": snap}, endpoint_localities=False)
    cla = res.get(ENDPOINT)["playlist"]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    hosts = [lb.endpoint.address.socket_address.address for lb in cla.endpoints[0].lb_endpoints]
    assert hosts == ["10.0.0.1", "::1"]
    assert len(res.skipped) == 1 and "db.example.net" in res.skipped[0]


def test_by_default_each_endpoint_is_a_locality_weighted_by_its_srv_weight() -> None:
    """gRPC honours locality weights, not endpoint weights: each endpoint is its own locality."""
    snap = UpstreamSnapshot.of(
        [
            ep("10.0.0.1", "a", weight=1),
            ep("10.0.0.2", "a", weight=9),
            ep("10.0.1.1", "b", weight=0),
        ],
        ("a", "b"),
    )
    got = [
        (lle.priority, lle.locality.zone, lle.locality.sub_zone, lle.load_balancing_weight.value)
        for lle in cla_of(snap, split=True).endpoints
    ]
    assert got == [
        (0, "a", "srv-priority-10/10.0.0.1:80", 1),
        (0, "a", "srv-priority-10/10.0.0.2:80", 9),
        (1, "b", "srv-priority-10/10.0.1.1:80", 1),
    ]


def test_ring_hash_keeps_one_locality_per_tier() -> None:
    """Ring hash weighs endpoints itself; splitting would multiply the weights, so it does not."""
    snap = UpstreamSnapshot.of([ep("10.0.0.1", "a"), ep("10.0.0.2", "a")], ("a",), lb="ring_hash")
    (lle,) = cla_of(snap, split=True).endpoints
    assert len(lle.lb_endpoints) == 2


def test_an_address_listed_twice_is_kept_once_in_its_preferred_tier() -> None:
    """gRPC refuses duplicate addresses; the copy in the earlier site/priority wins."""
    snap = UpstreamSnapshot.of([ep("10.0.0.1", "b"), ep("10.0.0.1", "a", 20)], ("a", "b"))
    res = build_resources({"playlist": snap})
    cla = res.get(ENDPOINT)["playlist"]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    assert [lle.locality.zone for lle in cla.endpoints] == ["a"]
    assert len(res.skipped) == 1 and "listed twice" in res.skipped[0]


def test_empty_snapshot_gives_an_empty_assignment() -> None:
    """No endpoints: an assignment with no localities (clients then fail fast), not an error."""
    assert list(cla_of(UpstreamSnapshot.of([], ("a",))).endpoints) == []


def test_listener_has_router_filter_and_asks_rds_for_its_route() -> None:
    """LDS: api_listener → HCM with the router as its HTTP filter and RDS over ADS by name."""
    res = build_resources({"playlist": UpstreamSnapshot.of([ep("10.0.0.1", "a")], ("a",))})
    listener = res.get(LISTENER)["playlist"]
    assert isinstance(listener, listener_pb2.Listener)
    hcm = hcm_pb2.HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(hcm)
    assert [f.typed_config.TypeName() for f in hcm.http_filters] == [
        router_pb2.Router.DESCRIPTOR.full_name
    ]
    assert hcm.rds.route_config_name == "playlist" and hcm.rds.config_source.HasField("ads")
    route = res.get(ROUTE)["playlist"]
    assert isinstance(route, route_pb2.RouteConfiguration)
    assert route.virtual_hosts[0].routes[0].route.cluster == "playlist"


def test_inline_routes_put_the_route_in_the_listener() -> None:
    """inline_routes: the HCM carries the route, and RDS has no per-upstream route."""
    res = build_resources({"playlist": UpstreamSnapshot.of([], ("a",))}, inline_routes=True)
    hcm = hcm_pb2.HttpConnectionManager()
    res.get(LISTENER)["playlist"].api_listener.api_listener.Unpack(hcm)  # type: ignore[attr-defined]
    assert hcm.route_config.virtual_hosts[0].routes[0].route.cluster == "playlist"
    assert set(res.get(ROUTE)) == {ENVOY_ROUTE_NAME}


def test_cluster_is_eds_over_ads_with_mapped_lb_policy() -> None:
    """CDS: EDS over ADS, service_name = upstream; ring_hash kept, peak_ewma → ROUND_ROBIN."""
    res = build_resources(
        {
            "playlist": UpstreamSnapshot.of([], lb="peak_ewma"),
            "metadata": UpstreamSnapshot.of([], lb="ring_hash", hash_key="x-user"),
        }
    )
    playlist, metadata = res.get(CLUSTER)["playlist"], res.get(CLUSTER)["metadata"]
    assert isinstance(playlist, cluster_pb2.Cluster) and isinstance(metadata, cluster_pb2.Cluster)
    assert playlist.type == cluster_pb2.Cluster.EDS
    assert playlist.eds_cluster_config.service_name == "playlist"
    assert playlist.eds_cluster_config.eds_config.HasField("ads")
    assert playlist.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert metadata.lb_policy == cluster_pb2.Cluster.RING_HASH
    route = res.get(ROUTE)["metadata"]
    assert isinstance(route, route_pb2.RouteConfiguration)
    assert route.virtual_hosts[0].routes[0].route.hash_policy[0].header.header_name == "x-user"


def test_envoy_route_table_routes_grpc_services_by_path_prefix() -> None:
    """The `outbound` route maps `/pkg.Service/` to the upstream that serves it, for Envoy."""
    res = build_resources(
        {"playlist": UpstreamSnapshot.of([], grpc_services=("music.playlist.v1.Playlist",))}
    )
    route = res.get(ROUTE)[ENVOY_ROUTE_NAME]
    assert isinstance(route, route_pb2.RouteConfiguration)
    assert [(r.match.prefix, r.route.cluster) for r in route.virtual_hosts[0].routes] == [
        ("/music.playlist.v1.Playlist/", "playlist")
    ]


endpoints = st.lists(
    st.builds(
        Endpoint,
        host=st.integers(1, 250).map(lambda i: f"10.0.0.{i}"),
        port=st.integers(1, 65535),
        site=st.sampled_from(["a", "b", "c", "d"]),
        priority=st.integers(0, 65535),
        weight=st.integers(0, 65535),
    ),
    max_size=30,
)


@given(endpoints, st.permutations(["a", "b", "c"]), st.booleans())
def test_priorities_are_contiguous_from_zero_and_follow_site_order(
    eps: list[Endpoint], sites: list[str], split: bool
) -> None:
    """Any input: priorities 0..n-1 with no gaps, localities unique, site order never inverted."""
    cla = cla_of(UpstreamSnapshot.of(eps, sites), split=split)
    prios = [lle.priority for lle in cla.endpoints]
    assert sorted(set(prios)) == list(range(len(set(prios))))
    assert prios == sorted(prios)
    localities = [(lle.locality.zone, lle.locality.sub_zone) for lle in cla.endpoints]
    assert len(set(localities)) == len(localities)
    order = [*sites, "d"]
    ranks = [
        order.index(lle.locality.zone) for lle in sorted(cla.endpoints, key=lambda x: x.priority)
    ]
    assert ranks == sorted(ranks)
    assert all(lle.load_balancing_weight.value >= 1 for lle in cla.endpoints)
    assert all(
        lb.load_balancing_weight.value >= 1 for lle in cla.endpoints for lb in lle.lb_endpoints
    )
    assert sum(len(lle.lb_endpoints) for lle in cla.endpoints) == len({e.key for e in eps})
