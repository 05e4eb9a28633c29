"""Fixtures: the example services started in-process on loopback port 0, SQLite in tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from services import accesspoint, metadata, playlist, playlistview, search
from services.runtime import Running

# Small but real: enough rows for joins and ranking, seeded in milliseconds.
TRACKS, PLAYLISTS = "2000", "200"
TOKEN = "tok-alice"

Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """start(module, *argv) -> Running; everything started is stopped at teardown."""
    started: list[Running] = []

    async def _start(module: ModuleType, *argv: str) -> Running:
        args = module.build_parser().parse_args(["--port", "0", *argv])
        running: Running = await module.start(args)
        started.append(running)
        return running

    yield _start
    for running in reversed(started):
        await running.stop(0)


def data_args(db: Path, name: str) -> list[str]:
    return ["--db", str(db), "--tracks", TRACKS, "--playlists", PLAYLISTS, "--name", name]


@pytest.fixture
async def data(start: Start, tmp_path: Path) -> dict[str, Running]:
    """One instance each of playlist, metadata and search."""
    return {
        "playlist": await start(playlist, *data_args(tmp_path / "playlist.db", "playlist-a")),
        "metadata": await start(metadata, *data_args(tmp_path / "metadata.db", "metadata-a")),
        "search": await start(search, *data_args(tmp_path / "search.db", "search-a")),
    }


@pytest.fixture
async def view(start: Start, data: dict[str, Running]) -> Running:
    return await start(
        playlistview,
        "--playlist",
        data["playlist"].address,
        "--metadata",
        data["metadata"].address,
        "--name",
        "view-a",
    )


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.txt"
    path.write_text(f"# test tokens\n{TOKEN} alice\ntok-bob bob  # second user\n")
    return path


@pytest.fixture
async def ap(start: Start, view: Running, data: dict[str, Running], tokens: Path) -> Running:
    return await start(
        accesspoint,
        "--tokens",
        str(tokens),
        "--playlistview",
        view.address,
        "--search",
        data["search"].address,
        "--watch-interval-ms",
        "50",
        "--name",
        "ap-a",
    )


@pytest.fixture
async def channel_to() -> AsyncIterator[Callable[[Running], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def _open(running: Running) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(running.address)
        channels.append(channel)
        return channel

    yield _open
    for channel in channels:
        await channel.close()
