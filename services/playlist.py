"""The playlist data service: playlists in SQLite, unary reads, transactional writes.

Does I/O (SQLite through services.db, gRPC). `AddTracks` with a non-zero
`expected_revision` is an optimistic-concurrency write: read the revision and append
inside one `BEGIN IMMEDIATE` transaction, ABORTED if another writer got there first,
so two instances sharing the site's file never lose an update.
"""

from __future__ import annotations

import argparse
import sqlite3
import uuid
from collections.abc import Sequence

import grpc

from music.playlist.v1 import playlist_pb2 as pb
from music.playlist.v1 import playlist_pb2_grpc as pb_grpc
from services import runtime, seed
from services.db import Database, transaction

SERVICE = "music.playlist.v1.Playlist"

SCHEMA = """
CREATE TABLE playlists (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, revision INTEGER NOT NULL
);
CREATE INDEX playlists_owner ON playlists (owner);
CREATE TABLE playlist_tracks (
  playlist_id TEXT NOT NULL, position INTEGER NOT NULL, track_id TEXT NOT NULL,
  PRIMARY KEY (playlist_id, position)
) WITHOUT ROWID
"""


def seed_rows(conn: sqlite3.Connection, n: int, n_tracks: int, rng_seed: int) -> None:
    playlists = []
    rows = []
    for p in seed.playlists(n, n_tracks, rng_seed):
        playlists.append((p.id, p.name, p.owner, 1))
        rows.extend((p.id, i, t) for i, t in enumerate(p.track_ids))
    conn.executemany("INSERT INTO playlists VALUES (?, ?, ?, ?)", playlists)
    conn.executemany("INSERT INTO playlist_tracks VALUES (?, ?, ?)", rows)


class NotFound(Exception):
    pass


class Conflict(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(current)
        self.current = current


def _read(conn: sqlite3.Connection, playlist_id: str) -> pb.PlaylistRecord:
    row = conn.execute(
        "SELECT id, name, owner, revision FROM playlists WHERE id = ?", (playlist_id,)
    ).fetchone()
    if row is None:
        raise NotFound(playlist_id)
    tracks = conn.execute(
        "SELECT track_id FROM playlist_tracks WHERE playlist_id = ? ORDER BY position",
        (playlist_id,),
    ).fetchall()
    return pb.PlaylistRecord(
        id=row[0], name=row[1], owner=row[2], revision=row[3], track_ids=[t[0] for t in tracks]
    )


def get(conn: sqlite3.Connection, playlist_id: str) -> pb.PlaylistRecord:
    # One read transaction so the header and the tracks are the same revision.
    with transaction(conn, immediate=False):
        return _read(conn, playlist_id)


def create(conn: sqlite3.Connection, name: str, owner: str, track_ids: Sequence[str]) -> str:
    playlist_id = f"pl-{uuid.uuid4().hex[:12]}"
    with transaction(conn):
        conn.execute("INSERT INTO playlists VALUES (?, ?, ?, 1)", (playlist_id, name, owner))
        conn.executemany(
            "INSERT INTO playlist_tracks VALUES (?, ?, ?)",
            [(playlist_id, i, t) for i, t in enumerate(track_ids)],
        )
        return playlist_id


def add_tracks(
    conn: sqlite3.Connection, playlist_id: str, track_ids: Sequence[str], expected: int
) -> pb.PlaylistRecord:
    with transaction(conn):
        row = conn.execute("SELECT revision FROM playlists WHERE id = ?", (playlist_id,)).fetchone()
        if row is None:
            raise NotFound(playlist_id)
        if expected and row[0] != expected:
            raise Conflict(row[0])
        (end,) = conn.execute(
            "SELECT COALESCE(MAX(position) + 1, 0) FROM playlist_tracks WHERE playlist_id = ?",
            (playlist_id,),
        ).fetchone()
        conn.executemany(
            "INSERT INTO playlist_tracks VALUES (?, ?, ?)",
            [(playlist_id, end + i, t) for i, t in enumerate(track_ids)],
        )
        conn.execute("UPDATE playlists SET revision = revision + 1 WHERE id = ?", (playlist_id,))
        return _read(conn, playlist_id)


def list_playlists(conn: sqlite3.Connection, owner: str, limit: int) -> list[pb.PlaylistRecord]:
    with transaction(conn, immediate=False):
        ids = conn.execute(
            "SELECT id FROM playlists WHERE owner = ? ORDER BY id LIMIT ?", (owner, limit)
        ).fetchall()
        return [_read(conn, i[0]) for i in ids]


class PlaylistService(pb_grpc.PlaylistServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def Get(
        self, request: pb.GetPlaylistRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaylistRecord:
        try:
            return await self.db.run(get, request.id)
        except NotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no playlist {request.id!r}")

    async def Create(
        self, request: pb.CreatePlaylistRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaylistRecord:
        if not request.name or not request.owner:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name and owner are required")
        playlist_id = await self.db.run(
            create, request.name, request.owner, list(request.track_ids)
        )
        return await self.db.run(get, playlist_id)

    async def AddTracks(
        self, request: pb.AddTracksRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaylistRecord:
        try:
            return await self.db.run(
                add_tracks, request.id, list(request.track_ids), request.expected_revision
            )
        except NotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no playlist {request.id!r}")
        except Conflict as exc:
            await context.abort(
                grpc.StatusCode.ABORTED,
                f"revision is {exc.current}, expected {request.expected_revision}",
            )

    async def List(
        self, request: pb.ListPlaylistsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPlaylistsResponse:
        limit = min(request.limit or 50, 500)
        records = await self.db.run(list_playlists, request.owner, limit)
        return pb.ListPlaylistsResponse(playlists=records)


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.common_parser("playlist", "Playlist data service (SQLite).")
    runtime.add_data_args(parser, "playlist.db")
    return parser


async def start(args: argparse.Namespace) -> runtime.Running:
    return await runtime.start_data_service(
        args,
        SCHEMA,
        f"playlist seed={args.seed} playlists={args.playlists} tracks={args.tracks}",
        lambda conn: seed_rows(conn, args.playlists, args.tracks, args.seed),
        lambda server, db: pb_grpc.add_PlaylistServicer_to_server(PlaylistService(db), server),
        [SERVICE],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return runtime.main(build_parser, start, argv)


if __name__ == "__main__":
    raise SystemExit(main())
