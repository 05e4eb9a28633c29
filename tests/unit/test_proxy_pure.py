"""Pure parts of the data plane: routing, hop-by-hop metadata, local-error naming,
the channel pool's idle plan, and the request stream kept for a replay."""

from __future__ import annotations

import pytest

from sidecar.proxy.channels import idle_keys
from sidecar.proxy.headers import forwardable, local_reason, with_request_id
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


def test_request_id_kept_or_created() -> None:
    """An existing x-request-id is kept; a missing one is created once."""
    md, rid = with_request_id((("x-request-id", "abc"),))
    assert (md, rid) == ((("x-request-id", "abc"),), "abc")
    md, rid = with_request_id(())
    assert md == (("x-request-id", rid),) and len(rid) == 32


def test_local_reasons() -> None:
    """grpcio's own wording names local failures; a peer's statuses are left alone."""
    refused = "failed to connect to all addresses; last error: UNKNOWN: Connection refused"
    assert local_reason("UNAVAILABLE", refused, got_headers=False, deadline_passed=False) == (
        "connect_failed"
    )
    assert local_reason(
        "UNAVAILABLE", "Socket closed", got_headers=True, deadline_passed=False
    ) == ("connection_lost")
    assert local_reason("DEADLINE_EXCEEDED", "Deadline Exceeded", got_headers=False,
                        deadline_passed=True) == "timeout"  # fmt: skip
    assert (
        local_reason("DEADLINE_EXCEEDED", "app", got_headers=False, deadline_passed=False) is None
    )
    assert (
        local_reason("UNAVAILABLE", "app is sad", got_headers=False, deadline_passed=False) is None
    )


def test_idle_plan_spares_leased_and_recent_channels() -> None:
    """Only channels without leases and idle for the timeout are closed."""
    entries = {"a:1": (0, 0.0), "b:1": (1, 0.0), "c:1": (0, 95.0)}
    assert idle_keys(entries, now=100.0, idle_s=10.0) == ["a:1"]


async def test_request_stream_replays_until_it_outgrows_its_cap() -> None:
    """A retried stream resends every message read so far, then the rest; past the
    cap it stops being replayable and a replay is refused."""
    from collections.abc import AsyncIterator

    from sidecar.proxy.replay import RequestStream

    async def source(items: list[bytes]) -> AsyncIterator[bytes]:
        for item in items:
            yield item

    stream = RequestStream(source([b"12345", b"678", b"9"]), cap_bytes=10)
    first = stream.replay()
    assert await first.__anext__() == b"12345"  # an attempt that failed after one message
    assert [m async for m in stream.replay()] == [b"12345", b"678", b"9"]
    assert stream.replayable and stream.nbytes == 9
    stream.close()

    big = RequestStream(source([b"12345", b"678", b"abc", b"d"]), cap_bytes=10)
    assert [m async for m in big.replay()] == [b"12345", b"678", b"abc", b"d"]
    assert not big.replayable
    with pytest.raises(RuntimeError):
        _ = [m async for m in big.replay()]
    big.close()
