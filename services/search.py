"""The search data service: a full-text index of tracks in SQLite (FTS5), streamed hits.

Does I/O (SQLite through services.db, gRPC). Every query word is a prefix match and
all must match; hits are ranked by BM25 (title weighted over artist), best first,
ties by track id, so the stream order is deterministic. The rows are read in one
short query off the loop, then streamed.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence

import grpc

from music.search.v1 import search_pb2 as pb
from music.search.v1 import search_pb2_grpc as pb_grpc
from services import runtime, seed
from services.db import Database

SERVICE = "music.search.v1.Search"
DEFAULT_LIMIT = 20
MAX_LIMIT = 500

SCHEMA = """
CREATE TABLE tracks (
  rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT NOT NULL, artist TEXT NOT NULL
);
CREATE VIRTUAL TABLE tracks_fts USING fts5 (
  title, artist, content = 'tracks', content_rowid = 'rowid'
)
"""

QUERY = """
SELECT t.id, t.title, t.artist, bm25(tracks_fts, 2.0, 1.0) AS rank
FROM tracks_fts JOIN tracks t ON t.rowid = tracks_fts.rowid
WHERE tracks_fts MATCH ? ORDER BY rank, t.id LIMIT ?
"""


def seed_rows(conn: sqlite3.Connection, n_tracks: int, rng_seed: int) -> None:
    conn.executemany(
        "INSERT INTO tracks (id, title, artist) VALUES (?, ?, ?)",
        ((t.id, t.title, t.artist) for t in seed.tracks(n_tracks, rng_seed)),
    )
    conn.execute("INSERT INTO tracks_fts (tracks_fts) VALUES ('rebuild')")


def fts_query(text: str) -> str | None:
    """User text to an FTS5 query: each word a quoted prefix term, all required."""
    words = re.findall(r"\w+", text.lower())
    return " ".join(f'"{w}"*' for w in words) if words else None


def search(conn: sqlite3.Connection, match: str, limit: int) -> list[pb.SearchHit]:
    rows = conn.execute(QUERY, (match, limit)).fetchall()
    return [pb.SearchHit(track_id=r[0], title=r[1], artist=r[2], score=-r[3]) for r in rows]


class SearchService(pb_grpc.SearchServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SearchHit]:
        match = fts_query(request.query)
        if match is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the query has no words")
        limit = min(request.limit or DEFAULT_LIMIT, MAX_LIMIT)
        for hit in await self.db.run(search, match, limit):
            yield hit


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.common_parser("search", "Track search data service (SQLite FTS5).")
    runtime.add_data_args(parser, "search.db")
    return parser


async def start(args: argparse.Namespace) -> runtime.Running:
    return await runtime.start_data_service(
        args,
        SCHEMA,
        f"search seed={args.seed} tracks={args.tracks}",
        lambda conn: seed_rows(conn, args.tracks, args.seed),
        lambda server, db: pb_grpc.add_SearchServicer_to_server(SearchService(db), server),
        [SERVICE],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return runtime.main(build_parser, start, argv)


if __name__ == "__main__":
    raise SystemExit(main())
