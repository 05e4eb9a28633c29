"""With mTLS, a Cluster carries gRPC A29's UpstreamTlsContext: the `default` certificate
provider for both sides, SAN matchers for the peer IDs; without, no transport socket."""

from __future__ import annotations

import re

from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from sidecar.endpoint import Endpoint
from sidecar.tls.identity import IdPattern
from sidecar.xds.resources import UpstreamSnapshot, build_cluster

EP = Endpoint("10.0.0.1", 8181, "lon3")


def test_patterns_become_whole_id_regexes() -> None:
    name = IdPattern.parse("playlist", "example.net").regex()
    assert re.match(name, "spiffe://example.net/site/sto3/service/playlist")
    assert not re.match(name, "spiffe://example.net/site/sto3/service/playlistview")
    assert not re.match(name, "spiffe://example.org/site/sto3/service/playlist")
    exact = IdPattern.parse("spiffe://example.net/site/lon3/service/search", "x").regex()
    assert re.match(exact, "spiffe://example.net/site/lon3/service/search")
    assert not re.match(exact, "spiffe://example.net/site/sto3/service/search")


def test_cluster_transport_socket() -> None:
    plain = build_cluster("playlist", UpstreamSnapshot.of([EP]))
    assert not plain.HasField("transport_socket")
    regex = IdPattern.parse("playlist", "example.net").regex()
    cluster = build_cluster("playlist", UpstreamSnapshot.of([EP], peer_id_regexes=(regex,)))
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(ctx)
    common = ctx.common_tls_context
    assert common.tls_certificate_provider_instance.instance_name == "default"
    validation = common.validation_context
    assert validation.ca_certificate_provider_instance.instance_name == "default"
    assert [m.safe_regex.regex for m in validation.match_subject_alt_names] == [regex]
