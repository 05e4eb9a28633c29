"""The view's fan-out and degradation, the perimeter's token check, Session pushes, end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from music.accesspoint.v1 import accesspoint_pb2, accesspoint_pb2_grpc
from music.playlist.v1 import playlist_pb2, playlist_pb2_grpc
from music.playlistview.v1 import playlistview_pb2, playlistview_pb2_grpc
from services import seed
from services.knobs import set_knobs
from services.runtime import Running

from .conftest import PLAYLISTS, TOKEN, TRACKS

Chan = Callable[[Running], grpc.aio.Channel]
AUTH = (("authorization", f"Bearer {TOKEN}"),)
pytestmark = pytest.mark.timeout(30)

EXPECTED = {p.id: p for p in seed.playlists(int(PLAYLISTS), int(TRACKS))}
TITLES = {t.id: t.title for t in seed.tracks(int(TRACKS))}


async def get_view(channel: grpc.aio.Channel, pid: str, deadline_s: float = 2.0):  # type: ignore[no-untyped-def]
    stub = playlistview_pb2_grpc.PlaylistViewStub(channel)
    return await stub.GetPlaylistView(
        playlistview_pb2.GetPlaylistViewRequest(playlist_id=pid), timeout=deadline_s
    )


async def test_view_joins_playlist_and_metadata(view: Running, channel_to: Chan) -> None:
    """A view has the playlist's tracks in order, each with its metadata title."""
    pid = seed.playlist_id(3)
    got = await get_view(channel_to(view), pid)
    assert not got.metadata_missing
    assert [t.id for t in got.tracks] == list(EXPECTED[pid].track_ids)
    assert [t.title for t in got.tracks] == [TITLES[t] for t in EXPECTED[pid].track_ids]
    assert got.revision == 1


@pytest.mark.parametrize("knob", [{"latency_ms": 1500.0}, {"fail_ratio": 1.0}])
async def test_view_degrades_when_metadata_is_slow_or_failing(
    view: Running, data: dict[str, Running], channel_to: Chan, knob: dict[str, float]
) -> None:
    """Slow or failing metadata: still OK within the caller's deadline, metadata_missing set."""
    await set_knobs(data["metadata"].address, **knob)
    pid = seed.playlist_id(4)
    started = time.monotonic()
    got = await get_view(channel_to(view), pid, deadline_s=0.6)
    assert time.monotonic() - started < 0.6
    assert got.metadata_missing
    assert [t.id for t in got.tracks] == list(EXPECTED[pid].track_ids)
    assert all(not t.title for t in got.tracks)


async def test_view_relays_playlist_failure(
    view: Running, data: dict[str, Running], channel_to: Chan
) -> None:
    """The playlist is essential: its NOT_FOUND or its outage fails the view, with a cause."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_view(channel_to(view), "pl-nope")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-cause", "playlist:NOT_FOUND") in tuple(err.value.trailing_metadata())
    await set_knobs(data["playlist"].address, fail_ratio=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await get_view(channel_to(view), seed.playlist_id(1))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("header", [None, "Bearer tok-wrong", "Basic tok-alice", "Bearer "])
async def test_token_check(ap: Running, channel_to: Chan, header: str | None) -> None:
    """A missing, unknown or non-bearer token is UNAUTHENTICATED on every RPC kind."""
    stub = accesspoint_pb2_grpc.AccessPointStub(channel_to(ap))
    md = () if header is None else (("authorization", header),)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenPlaylist(
            accesspoint_pb2.OpenPlaylistRequest(playlist_id="pl-00001"), metadata=md, timeout=5
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.Search(accesspoint_pb2.SearchRequest(query="x"), metadata=md):
            pass
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    session = stub.Session(metadata=md, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await session.read()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_accesspoint_end_to_end(ap: Running, channel_to: Chan) -> None:
    """Through all three layers: OpenPlaylist (both priorities) and a Search stream answer."""
    stub = accesspoint_pb2_grpc.AccessPointStub(channel_to(ap))
    pid = seed.playlist_id(9)
    for prefetch in (False, True):
        got = await stub.OpenPlaylist(
            accesspoint_pb2.OpenPlaylistRequest(playlist_id=pid, prefetch=prefetch),
            metadata=AUTH,
            timeout=5,
        )
        assert [t.title for t in got.tracks] == [TITLES[t] for t in EXPECTED[pid].track_ids]
    hits = [
        h
        async for h in stub.Search(
            accesspoint_pb2.SearchRequest(query="golden", limit=5), metadata=AUTH, timeout=5
        )
    ]
    assert 0 < len(hits) <= 5 and all("golden" in h.title.lower() + h.artist.lower() for h in hits)


async def test_session_answers_and_pushes_changes(
    ap: Running, data: dict[str, Running], channel_to: Chan
) -> None:
    """A session answers ping and open, and pushes playlist_changed_id after a write."""
    stub = accesspoint_pb2_grpc.AccessPointStub(channel_to(ap))
    writes = playlist_pb2_grpc.PlaylistStub(channel_to(data["playlist"]))
    pid = seed.playlist_id(12)
    outgoing: asyncio.Queue[accesspoint_pb2.ClientMessage | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[accesspoint_pb2.ClientMessage]:
        while (msg := await outgoing.get()) is not None:
            yield msg

    session = stub.Session(requests(), metadata=AUTH, timeout=10)
    await outgoing.put(accesspoint_pb2.ClientMessage(request_id=1, ping="hi"))
    await outgoing.put(
        accesspoint_pb2.ClientMessage(
            request_id=2, open_playlist=accesspoint_pb2.OpenPlaylistRequest(playlist_id=pid)
        )
    )
    await outgoing.put(accesspoint_pb2.ClientMessage(request_id=3, watch_playlist_id=pid))
    answers = {}
    while len(answers) < 3:
        msg = await session.read()
        answers[msg.request_id] = msg
    assert answers[1].pong == "hi"
    assert answers[2].playlist.id == pid and answers[3].playlist.revision == 1
    await writes.AddTracks(playlist_pb2.AddTracksRequest(id=pid, track_ids=["trk-000001"]))
    push = await session.read()
    assert (push.request_id, push.playlist_changed_id) == (0, pid)
    await outgoing.put(
        accesspoint_pb2.ClientMessage(
            request_id=4, open_playlist=accesspoint_pb2.OpenPlaylistRequest(playlist_id="pl-nope")
        )
    )
    failed = await session.read()
    assert failed.request_id == 4 and failed.error.startswith("NOT_FOUND")
    await outgoing.put(None)  # half-close: the server finishes and ends the stream
    assert await session.read() == grpc.aio.EOF
    assert await session.code() == grpc.StatusCode.OK
