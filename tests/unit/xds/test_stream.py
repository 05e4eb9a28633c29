"""The per-stream state-of-the-world protocol: nonces, versions, ACK, NACK, subscriptions."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from sidecar.xds.resources import CLUSTER, ENDPOINT, LISTENER
from sidecar.xds.stream import StreamState

CAT = {LISTENER: {"playlist": b"L1", "search": b"S1"}, ENDPOINT: {"playlist": b"E1"}}
VER = {LISTENER: "1", ENDPOINT: "1"}


def req(
    type_url: str,
    names: list[str],
    nonce: str = "",
    version: str = "",
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=names, response_nonce=nonce, version_info=version
    )
    if error is not None:
        r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return r


def test_first_request_is_answered_with_the_named_resources() -> None:
    """A named subscription gets the names that exist, the type's version and a nonce."""
    s = StreamState("peer")
    (resp,) = s.on_request(req(LISTENER, ["playlist", "missing"]), CAT, VER, 0.0)
    assert resp.version_info == "1" and resp.nonce
    assert [r.value for r in resp.resources] == [b"L1"]


def test_wildcard_lds_gets_everything_but_eds_never_wildcards() -> None:
    """Empty names mean every resource for LDS/CDS, and nothing for EDS."""
    s = StreamState("peer")
    (lds,) = s.on_request(req(LISTENER, []), CAT, VER, 0.0)
    assert sorted(r.value for r in lds.resources) == [b"L1", b"S1"]
    (eds,) = s.on_request(req(ENDPOINT, []), CAT, VER, 0.0)
    assert list(eds.resources) == []


def test_ack_is_recorded_and_not_answered() -> None:
    """An ACK (our nonce, no error) records the version and sends nothing when nothing changed."""
    s = StreamState("peer")
    (resp,) = s.on_request(req(LISTENER, ["playlist"]), CAT, VER, 0.0)
    assert s.on_request(req(LISTENER, ["playlist"], resp.nonce, "1"), CAT, VER, 1.0) == []
    assert s.types[LISTENER].acked_version == "1" and s.types[LISTENER].nacked is None


def test_nack_is_remembered_and_the_same_content_is_not_resent() -> None:
    """A NACK is recorded with its message; the rejected content is not pushed again."""
    s = StreamState("peer")
    (resp,) = s.on_request(req(LISTENER, ["playlist"]), CAT, VER, 0.0)
    assert s.on_request(req(LISTENER, ["playlist"], resp.nonce, "", "bad"), CAT, VER, 2.0) == []
    nack = s.types[LISTENER].nacked
    assert nack is not None and (nack.version, nack.message, nack.at) == ("1", "bad", 2.0)
    assert s.on_catalogue(CAT, VER, 3.0) == []
    dumped = s.dump()["types"][LISTENER]
    assert dumped["nacked"]["message"] == "bad" and dumped["acked_version"] == ""


def test_a_change_after_a_nack_is_sent_and_its_ack_clears_the_nack() -> None:
    """After a NACK the next content change goes out; its ACK clears the NACK, history stays."""
    s = StreamState("peer")
    (resp,) = s.on_request(req(LISTENER, ["playlist"]), CAT, VER, 0.0)
    s.on_request(req(LISTENER, ["playlist"], resp.nonce, "", "bad"), CAT, VER, 1.0)
    cat2 = {**CAT, LISTENER: {"playlist": b"L2"}}
    (resp2,) = s.on_catalogue(cat2, {**VER, LISTENER: "2"}, 2.0)
    assert resp2.version_info == "2" and resp2.nonce != resp.nonce
    s.on_request(req(LISTENER, ["playlist"], resp2.nonce, "2"), cat2, VER, 3.0)
    assert s.types[LISTENER].nacked is None and s.types[LISTENER].acked_version == "2"
    assert len(s.types[LISTENER].nacks) == 1


def test_stale_nonce_is_ignored() -> None:
    """A request answering an older response changes nothing and gets no answer."""
    s = StreamState("peer")
    (first,) = s.on_request(req(LISTENER, ["playlist"]), CAT, VER, 0.0)
    cat2 = {**CAT, LISTENER: {"playlist": b"L2", "search": b"S1"}}
    (second,) = s.on_catalogue(cat2, {**VER, LISTENER: "2"}, 1.0)
    assert s.on_request(req(LISTENER, ["search"], first.nonce, "", "old"), cat2, VER, 2.0) == []
    assert s.types[LISTENER].nacked is None
    assert s.types[LISTENER].subscribed == frozenset({"playlist"})
    assert second.nonce == s.types[LISTENER].sent_nonce


def test_subscription_change_is_answered_with_the_new_set() -> None:
    """Adding a name to an ACKed subscription sends the new set at once."""
    s = StreamState("peer")
    (resp,) = s.on_request(req(LISTENER, ["playlist"]), CAT, VER, 0.0)
    (resp2,) = s.on_request(req(LISTENER, ["playlist", "search"], resp.nonce, "1"), CAT, VER, 1.0)
    assert sorted(r.value for r in resp2.resources) == [b"L1", b"S1"]


def test_catalogue_change_pushes_only_types_the_client_watches_and_that_changed() -> None:
    """An update sends EDS to an EDS watcher when its resource changed, and nothing else."""
    s = StreamState("peer")
    s.on_request(req(LISTENER, ["playlist"]), CAT, VER, 0.0)
    s.on_request(req(ENDPOINT, ["playlist"]), CAT, VER, 0.0)
    cat2 = {**CAT, ENDPOINT: {"playlist": b"E2"}, CLUSTER: {"playlist": b"C1"}}
    (resp,) = s.on_catalogue(cat2, {**VER, ENDPOINT: "2", CLUSTER: "1"}, 1.0)
    assert resp.type_url == ENDPOINT and [r.value for r in resp.resources] == [b"E2"]
    # A change to a resource the client did not name is not pushed.
    cat3 = {**cat2, LISTENER: {"playlist": b"L1", "search": b"S2"}}
    assert s.on_catalogue(cat3, VER, 2.0) == []


def test_node_is_taken_from_the_first_request() -> None:
    """The node id (for /config_dump and CSDS) comes from the first request that has one."""
    s = StreamState("peer")
    r = req(LISTENER, ["playlist"])
    r.node.id = "client-1"
    s.on_request(r, CAT, VER, 0.0)
    assert s.dump()["node_id"] == "client-1"


def test_unknown_type_is_ignored() -> None:
    """A request for a type we do not serve (e.g. SDS) gets no answer and no state."""
    s = StreamState("peer")
    assert s.on_request(req("type.googleapis.com/x.Secret", ["a"]), CAT, VER, 0.0) == []
    assert s.types == {}
