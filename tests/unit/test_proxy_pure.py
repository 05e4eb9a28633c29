"""Pure parts of the data plane: routing, and which metadata is end to end."""

from __future__ import annotations

from sidecar.metadata import forwardable
from sidecar.route import Router


def test_router_routes_by_service_in_path() -> None:
    """/pkg.Svc/Method goes to the upstream listing pkg.Svc; anything else has no route."""
    router = Router(
        {"playlist": ["music.playlist.v1.Playlist"], "search": ["music.search.v1.Search"]}
    )
    assert router.route("/music.playlist.v1.Playlist/Get") == "playlist"
    assert router.route("/music.search.v1.Search/Find") == "search"
    assert router.route("/music.other.v1.Other/Get") is None
    assert router.route("garbage") is None


def test_router_falls_back_to_the_authority() -> None:
    """An authority naming an upstream routes there (port dropped); the path wins."""
    router = Router({"playlist": ["music.playlist.v1.Playlist"], "search": []})
    assert router.route("/x.v1.X/Get", "search") == "search"
    assert router.route("/x.v1.X/Get", "search:15001") == "search"
    assert router.route("/music.playlist.v1.Playlist/Get", "search") == "playlist"
    assert router.route("/x.v1.X/Get", "127.0.0.1:15001") is None
    assert router.route("/x.v1.X/Get", "[::1]:15001") is None


def test_hop_by_hop_dropped_end_to_end_kept() -> None:
    """Transport headers are dropped; custom, binary, traceparent and details-bin pass."""
    md = (
        ("user-agent", "x"),
        ("grpc-timeout", "1S"),
        ("te", "trailers"),
        (":authority", "a"),
        ("x-a", "1"),
        ("x-b-bin", b"\x00"),
        ("traceparent", "00-1-2-01"),
        ("grpc-status-details-bin", b"\x08\x05"),
    )
    assert forwardable(md) == (
        ("x-a", "1"),
        ("x-b-bin", b"\x00"),
        ("traceparent", "00-1-2-01"),
        ("grpc-status-details-bin", b"\x08\x05"),
    )
