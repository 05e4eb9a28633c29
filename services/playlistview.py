"""The playlist view service: what a playlist screen needs, degrading instead of cascading.

Does I/O (gRPC). `GetPlaylistView` reads the playlist, then fans out to metadata in
parallel batches. The track ids come from the playlist, so that hop must come first;
everything after it runs concurrently. Each peer call gets a deadline taken from this
call's own remaining budget minus a small reserve kept to answer in time. When
metadata fails or is late the screen still comes back OK with the tracks' ids and
`metadata_missing = true` (degrade, don't cascade: Nygard's "fail fast, degrade").
A failed playlist read fails the call with the playlist's status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

import grpc

from music.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from music.playlist.v1 import playlist_pb2, playlist_pb2_grpc
from music.playlistview.v1 import playlistview_pb2 as pb
from music.playlistview.v1 import playlistview_pb2_grpc as pb_grpc
from services import runtime
from services.peers import Peers, add_client_flags, from_args, propagated, relay

SERVICE = "music.playlistview.v1.PlaylistView"
BATCH = 100  # ids per metadata call
log = logging.getLogger("services.playlistview")


def reserve_s(budget_s: float) -> float:
    """Time kept back from peer calls to build and send the (maybe degraded) answer."""
    return min(0.05, budget_s * 0.1)


class PlaylistViewService(pb_grpc.PlaylistViewServicer):
    def __init__(self, peers: Peers, default_deadline_s: float) -> None:
        self.peers = peers
        self.default_deadline_s = default_deadline_s

    def _stubs(
        self,
    ) -> tuple[playlist_pb2_grpc.PlaylistStub, metadata_pb2_grpc.MetadataStub]:
        return (
            playlist_pb2_grpc.PlaylistStub(self.peers.channel("playlist")),
            metadata_pb2_grpc.MetadataStub(self.peers.channel("metadata")),
        )

    async def GetPlaylistView(
        self, request: pb.GetPlaylistViewRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlaylistViewResponse:
        loop = asyncio.get_running_loop()
        budget = context.time_remaining()
        if budget is None:
            budget = self.default_deadline_s
        end = loop.time() + budget - reserve_s(budget)
        headers = propagated(context)
        playlists, metadata = self._stubs()

        try:
            record = await playlists.Get(
                playlist_pb2.GetPlaylistRequest(id=request.playlist_id),
                timeout=max(0.001, end - loop.time()),
                metadata=headers,
            )
        except grpc.aio.AioRpcError as exc:
            await relay(context, "playlist", exc)
            raise  # unreachable: abort raises

        ids = list(record.track_ids)
        found: dict[str, metadata_pb2.Track] = {}
        missing = False
        left = end - loop.time()
        if ids and left <= 0:
            missing = True
        elif ids:
            batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
            results = await asyncio.gather(
                *(
                    metadata.GetTracks(
                        metadata_pb2.GetTracksRequest(ids=b), timeout=left, metadata=headers
                    )
                    for b in batches
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, grpc.aio.AioRpcError):
                    missing = True
                    log.debug("metadata failed: %s %s", result.code().name, result.details())
                elif isinstance(result, BaseException):
                    raise result
                else:
                    found.update((t.id, t) for t in result.tracks)
        tracks = []
        for track_id in ids:
            t = found.get(track_id)
            if t is None:
                tracks.append(pb.TrackView(id=track_id))
            else:
                tracks.append(
                    pb.TrackView(id=t.id, title=t.title, artist=t.artist, duration_ms=t.duration_ms)
                )
        return pb.PlaylistViewResponse(
            id=record.id,
            name=record.name,
            owner=record.owner,
            revision=record.revision,
            tracks=tracks,
            metadata_missing=missing,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.common_parser("playlistview", "Playlist view service (fans out).")
    parser.add_argument("--outbound", help="the sidecar's outbound listener host:port")
    parser.add_argument("--playlist", help="playlist address (overrides --outbound)")
    parser.add_argument("--metadata", help="metadata address (overrides --outbound)")
    add_client_flags(parser)
    parser.add_argument(
        "--default-deadline-ms", type=float, default=1000.0, help="when the caller sets none"
    )
    return parser


async def start(args: argparse.Namespace) -> runtime.Running:
    peers = from_args(args, {"playlist": args.playlist, "metadata": args.metadata})
    await peers.start(("playlist", "metadata"))  # fail at start, not on the first call
    service = PlaylistViewService(peers, args.default_deadline_ms / 1000.0)
    running = await runtime.start_server(
        args, lambda s: pb_grpc.add_PlaylistViewServicer_to_server(service, s), [SERVICE]
    )
    running.cleanups.append(peers.close)
    return running


def main(argv: Sequence[str] | None = None) -> int:
    return runtime.main(build_parser, start, argv)


if __name__ == "__main__":
    raise SystemExit(main())
