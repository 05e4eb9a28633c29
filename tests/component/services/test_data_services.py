"""The data services against real SQLite files: reads, transactional writes, import, search."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from music.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from music.playlist.v1 import playlist_pb2, playlist_pb2_grpc
from music.search.v1 import search_pb2, search_pb2_grpc
from services import playlist, seed
from services.knobs import set_knobs
from services.runtime import Running

from .conftest import PLAYLISTS, TRACKS, Start, data_args

Chan = Callable[[Running], grpc.aio.Channel]
pytestmark = pytest.mark.timeout(30)


async def test_playlist_get_matches_seed(data: dict[str, Running], channel_to: Chan) -> None:
    """Get returns the seeded playlist row for row, and NOT_FOUND for an unknown id."""
    stub = playlist_pb2_grpc.PlaylistStub(channel_to(data["playlist"]))
    expected = next(iter(seed.playlists(int(PLAYLISTS), int(TRACKS))))
    got = await stub.Get(playlist_pb2.GetPlaylistRequest(id=expected.id), timeout=5)
    assert (got.name, got.owner, tuple(got.track_ids), got.revision) == (
        expected.name,
        expected.owner,
        expected.track_ids,
        1,
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Get(playlist_pb2.GetPlaylistRequest(id="pl-nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_add_tracks_conflict_is_aborted(data: dict[str, Running], channel_to: Chan) -> None:
    """AddTracks bumps the revision; a stale expected_revision fails ABORTED and writes nothing."""
    stub = playlist_pb2_grpc.PlaylistStub(channel_to(data["playlist"]))
    created = await stub.Create(
        playlist_pb2.CreatePlaylistRequest(name="n", owner="user-x", track_ids=["trk-000001"]),
        timeout=5,
    )
    assert created.revision == 1
    added = await stub.AddTracks(
        playlist_pb2.AddTracksRequest(id=created.id, track_ids=["trk-000002"], expected_revision=1),
        timeout=5,
    )
    assert (added.revision, list(added.track_ids)) == (2, ["trk-000001", "trk-000002"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.AddTracks(
            playlist_pb2.AddTracksRequest(
                id=created.id, track_ids=["trk-000003"], expected_revision=1
            ),
            timeout=5,
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    now = await stub.Get(playlist_pb2.GetPlaylistRequest(id=created.id), timeout=5)
    assert (now.revision, len(now.track_ids)) == (2, 2)
    listed = await stub.List(playlist_pb2.ListPlaylistsRequest(owner="user-x"), timeout=5)
    assert [p.id for p in listed.playlists] == [created.id]


async def test_two_instances_share_one_file(start: Start, tmp_path: Path, channel_to: Chan) -> None:
    """Two instances on one db file seed once and race writes: exactly one wins each revision."""
    db = tmp_path / "shared.db"
    a, b = await asyncio.gather(
        start(playlist, *data_args(db, "pl-a")), start(playlist, *data_args(db, "pl-b"))
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM playlists").fetchone()[0] == int(PLAYLISTS)
    stubs = [playlist_pb2_grpc.PlaylistStub(channel_to(r)) for r in (a, b)]
    target = seed.playlist_id(7)

    async def write(stub: playlist_pb2_grpc.PlaylistStub, n: int) -> str:
        try:
            await stub.AddTracks(
                playlist_pb2.AddTracksRequest(
                    id=target, track_ids=[f"trk-{n:06d}"], expected_revision=1
                ),
                timeout=10,
            )
            return "ok"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    outcomes = await asyncio.gather(*(write(stubs[i % 2], i + 1) for i in range(10)))
    assert sorted(outcomes) == ["ABORTED"] * 9 + ["ok"]
    # Unconditional writes from both instances all land (busy timeout, no lost update).
    before = await stubs[0].Get(playlist_pb2.GetPlaylistRequest(id=target), timeout=5)
    await asyncio.gather(
        *(
            stubs[i % 2].AddTracks(
                playlist_pb2.AddTracksRequest(id=target, track_ids=["trk-000001"]), timeout=10
            )
            for i in range(20)
        )
    )
    after = await stubs[1].Get(playlist_pb2.GetPlaylistRequest(id=target), timeout=5)
    assert after.revision == before.revision + 20
    assert len(after.track_ids) == len(before.track_ids) + 20


async def test_metadata_get_and_import_counts(data: dict[str, Running], channel_to: Chan) -> None:
    """GetTracks keeps the asked order and skips unknown ids; Import counts inserts and updates."""
    stub = metadata_pb2_grpc.MetadataStub(channel_to(data["metadata"]))
    got = await stub.GetTracks(
        metadata_pb2.GetTracksRequest(ids=["trk-000010", "trk-nope", "trk-000002"]), timeout=5
    )
    assert [t.id for t in got.tracks] == ["trk-000010", "trk-000002"]
    first = next(iter(seed.tracks(int(TRACKS))))
    assert got.tracks[1].title and got.tracks[1].artist
    assert (await stub.GetTracks(metadata_pb2.GetTracksRequest(ids=[first.id]))).tracks[
        0
    ].title == first.title

    def rows() -> list[metadata_pb2.Track]:
        new = [
            metadata_pb2.Track(id=f"new-{i}", title=f"New {i}", artist="A", duration_ms=1000)
            for i in range(1200)
        ]
        old = [metadata_pb2.Track(id="trk-000001", title="Renamed", artist="B", duration_ms=1)]
        return new[:700] + old + new[700:] + [new[0]]

    async def stream():  # type: ignore[no-untyped-def]
        for row in rows():
            yield row

    summary = await stub.Import(stream(), timeout=10)
    assert (summary.received, summary.inserted, summary.updated) == (1202, 1200, 2)
    renamed = await stub.GetTracks(metadata_pb2.GetTracksRequest(ids=["trk-000001", "new-1199"]))
    assert [t.title for t in renamed.tracks] == ["Renamed", "New 1199"]


async def test_search_streams_ranked_and_limited(
    data: dict[str, Running], channel_to: Chan
) -> None:
    """Search streams at most `limit` hits, every one matching, best score first."""
    stub = search_pb2_grpc.SearchStub(channel_to(data["search"]))
    word = "river"
    hits = [h async for h in stub.Search(search_pb2.SearchRequest(query=word, limit=7), timeout=5)]
    assert 0 < len(hits) <= 7
    assert all(word in f"{h.title} {h.artist}".lower() for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    many = [h async for h in stub.Search(search_pb2.SearchRequest(query="the"), timeout=5)]
    assert len(many) == 20  # default limit
    expected = sum(1 for t in seed.tracks(int(TRACKS)) if "river" in t.title.lower().split())
    wide = [h async for h in stub.Search(search_pb2.SearchRequest(query="rive", limit=500))]
    assert len(wide) >= min(expected, 500)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.Search(search_pb2.SearchRequest(query="  !! "), timeout=5):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_knobs_fail_and_health(data: dict[str, Running], channel_to: Chan) -> None:
    """Runtime knobs fail every call with the chosen status, flip health, and turn back off."""
    running = data["playlist"]
    channel = channel_to(running)
    stub = playlist_pb2_grpc.PlaylistStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    req = playlist_pb2.GetPlaylistRequest(id=seed.playlist_id(1))
    knobs = await set_knobs(
        running.address, fail_ratio=1.0, fail_status="RESOURCE_EXHAUSTED", serving=False
    )
    assert knobs["fail_ratio"] == 1.0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Get(req, timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("x-served-by", "playlist-a") in tuple(err.value.trailing_metadata())
    check = await health.Check(health_pb2.HealthCheckRequest(service=playlist.SERVICE), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await set_knobs(running.address, fail_ratio=0.0, serving=True)
    assert (await stub.Get(req, timeout=5)).id == seed.playlist_id(1)
    check = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await set_knobs(running.address, fail_status="NOT_A_STATUS")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
