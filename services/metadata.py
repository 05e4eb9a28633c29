"""The metadata data service: track metadata in SQLite; batch reads and a bulk import.

Does I/O (SQLite through services.db, gRPC). `Import` is client-streaming: rows are
upserted in batches, one short transaction per batch, so a long import never holds
the site's write lock for long and other instances keep writing between batches.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import AsyncIterator, Sequence

import grpc

from music.metadata.v1 import metadata_pb2 as pb
from music.metadata.v1 import metadata_pb2_grpc as pb_grpc
from services import runtime, seed
from services.db import Database, transaction

SERVICE = "music.metadata.v1.Metadata"
MAX_IDS = 1000
IMPORT_BATCH = 500

SCHEMA = """
CREATE TABLE tracks (
  id TEXT PRIMARY KEY, title TEXT NOT NULL, artist TEXT NOT NULL, album TEXT NOT NULL,
  duration_ms INTEGER NOT NULL
) WITHOUT ROWID
"""

UPSERT = (
    "INSERT INTO tracks VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "title = excluded.title, artist = excluded.artist, album = excluded.album, "
    "duration_ms = excluded.duration_ms"
)


def seed_rows(conn: sqlite3.Connection, n_tracks: int, rng_seed: int) -> None:
    conn.executemany(
        "INSERT INTO tracks VALUES (?, ?, ?, ?, ?)",
        (
            (t.id, t.title, t.artist, t.album, t.duration_ms)
            for t in seed.tracks(n_tracks, rng_seed)
        ),
    )


def get_tracks(conn: sqlite3.Connection, ids: Sequence[str]) -> list[pb.Track]:
    """The tracks that exist, in the order asked for (duplicates answered once each)."""
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT id, title, artist, album, duration_ms FROM tracks WHERE id IN ({marks})",
        tuple(ids),
    ).fetchall()
    found = {r[0]: r for r in rows}
    return [
        pb.Track(id=r[0], title=r[1], artist=r[2], album=r[3], duration_ms=r[4])
        for r in (found[i] for i in ids if i in found)
    ]


def upsert(conn: sqlite3.Connection, batch: Sequence[pb.Track]) -> tuple[int, int]:
    """Upsert one batch in one transaction; return (inserted, updated)."""
    ids = list({t.id for t in batch})
    with transaction(conn):
        marks = ",".join("?" * len(ids))
        existing = {r[0] for r in conn.execute(f"SELECT id FROM tracks WHERE id IN ({marks})", ids)}
        inserted = updated = 0
        for t in batch:
            if t.id in existing:
                updated += 1
            else:
                inserted += 1
                existing.add(t.id)
        conn.executemany(UPSERT, [(t.id, t.title, t.artist, t.album, t.duration_ms) for t in batch])
    return inserted, updated


class MetadataService(pb_grpc.MetadataServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetTracks(
        self, request: pb.GetTracksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTracksResponse:
        if len(request.ids) > MAX_IDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_IDS} ids")
        if not request.ids:
            return pb.GetTracksResponse()
        tracks = await self.db.run(get_tracks, list(dict.fromkeys(request.ids)))
        return pb.GetTracksResponse(tracks=tracks)

    async def Import(
        self, request_iterator: AsyncIterator[pb.Track], context: grpc.aio.ServicerContext
    ) -> pb.ImportSummary:
        summary = pb.ImportSummary()
        batch: list[pb.Track] = []

        async def flush() -> None:
            inserted, updated = await self.db.run(upsert, batch)
            summary.inserted += inserted
            summary.updated += updated
            batch.clear()

        async for track in request_iterator:
            summary.received += 1
            if not track.id:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"track #{summary.received} has no id ({summary.inserted} inserted, "
                    f"{summary.updated} updated before it)",
                )
            batch.append(track)
            if len(batch) >= IMPORT_BATCH:
                await flush()
        if batch:
            await flush()
        return summary


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.common_parser("metadata", "Track metadata data service (SQLite).")
    runtime.add_data_args(parser, "metadata.db")
    return parser


async def start(args: argparse.Namespace) -> runtime.Running:
    return await runtime.start_data_service(
        args,
        SCHEMA,
        f"metadata seed={args.seed} tracks={args.tracks}",
        lambda conn: seed_rows(conn, args.tracks, args.seed),
        lambda server, db: pb_grpc.add_MetadataServicer_to_server(MetadataService(db), server),
        [SERVICE],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return runtime.main(build_parser, start, argv)


if __name__ == "__main__":
    raise SystemExit(main())
