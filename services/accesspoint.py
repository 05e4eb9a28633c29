"""The access point: the perimeter. Checks tokens, tags priority, walks the request inward.

Does I/O (gRPC, reads the token file at start). Every call must carry
`authorization: Bearer <token>` with a token from `--tokens` (one token per line,
optionally followed by a user name; `#` starts a comment), else UNAUTHENTICATED.
Outbound calls go through one address (the sidecar's outbound listener) and carry
`x-sidecar-priority`: `critical` for what a user waits on, `sheddable` for prefetch
and background polling, so an overloaded sidecar drops the work nobody waits for.

`Session` is a bidi stream: the client sends requests (open, watch, ping) and reads
answers (request_id set) and pushes (request_id 0; `playlist_changed_id` when a
watched playlist's revision changes, found by polling the view every
`--watch-interval-ms`). Requests on one session are served concurrently; when the
client half-closes, pending answers are sent and the stream ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc

from music.accesspoint.v1 import accesspoint_pb2 as pb
from music.accesspoint.v1 import accesspoint_pb2_grpc as pb_grpc
from music.playlistview.v1 import playlistview_pb2, playlistview_pb2_grpc
from music.search.v1 import search_pb2, search_pb2_grpc
from services import runtime
from services.peers import PRIORITY_KEY, Peers, add_client_flags, cause, from_args, relay

SERVICE = "music.accesspoint.v1.AccessPoint"
CRITICAL, SHEDDABLE = "critical", "sheddable"
RESERVE_S = 0.01  # kept back from the inner call's deadline to relay its answer
SESSION_QUEUE = 256
log = logging.getLogger("services.accesspoint")


def load_tokens(path: str) -> dict[str, str]:
    """token -> user from a token file (see the module docstring)."""
    tokens: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            tokens[words[0]] = words[1] if len(words) > 1 else words[0][:8]
    return tokens


def bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AccessPointService(pb_grpc.AccessPointServicer):
    def __init__(
        self, peers: Peers, tokens: dict[str, str], deadline_s: float, watch_s: float
    ) -> None:
        self.peers = peers
        self.tokens = tokens
        self.deadline_s = deadline_s
        self.watch_s = watch_s

    async def _auth(self, context: grpc.aio.ServicerContext) -> str:
        token = bearer(context.invocation_metadata())
        user = self.tokens.get(token) if token else None
        if user is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token" if token is None else "unknown token",
            )
        assert user is not None
        return user

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        budget = self.deadline_s if remaining is None else remaining
        return max(0.001, budget - RESERVE_S)

    def _headers(self, context: grpc.aio.ServicerContext, priority: str) -> list[tuple[str, str]]:
        headers = [(PRIORITY_KEY, priority)]
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str):
                headers.append((key, value))
        return headers

    async def _view(
        self, playlist_id: str, priority: str, deadline_s: float, headers: list[tuple[str, str]]
    ) -> playlistview_pb2.PlaylistViewResponse:
        stub = playlistview_pb2_grpc.PlaylistViewStub(self.peers.channel("playlistview"))
        headers = [(k, v) for k, v in headers if k != PRIORITY_KEY] + [(PRIORITY_KEY, priority)]
        return await stub.GetPlaylistView(
            playlistview_pb2.GetPlaylistViewRequest(playlist_id=playlist_id),
            timeout=deadline_s,
            metadata=headers,
        )

    async def OpenPlaylist(
        self, request: pb.OpenPlaylistRequest, context: grpc.aio.ServicerContext
    ) -> playlistview_pb2.PlaylistViewResponse:
        await self._auth(context)
        priority = SHEDDABLE if request.prefetch else CRITICAL
        try:
            headers = self._headers(context, priority)
            return await self._view(request.playlist_id, priority, self._timeout(context), headers)
        except grpc.aio.AioRpcError as exc:
            await relay(context, "playlistview", exc)
            raise

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[search_pb2.SearchHit]:
        await self._auth(context)
        stub = search_pb2_grpc.SearchStub(self.peers.channel("search"))
        call = stub.Search(
            search_pb2.SearchRequest(query=request.query, limit=request.limit),
            timeout=self._timeout(context),
            metadata=self._headers(context, CRITICAL),
        )
        try:
            async for hit in call:
                yield hit
        except grpc.aio.AioRpcError as exc:
            await relay(context, "search", exc)
        finally:
            call.cancel()  # streaming calls do not pass our caller's cancel on by themselves

    async def Session(
        self, request_iterator: AsyncIterator[pb.ClientMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ServerMessage]:
        await self._auth(context)
        headers = self._headers(context, CRITICAL)
        out: asyncio.Queue[pb.ServerMessage | None] = asyncio.Queue(SESSION_QUEUE)
        watches: dict[str, int] = {}
        pending: set[asyncio.Task[None]] = set()

        async def answer(msg: pb.ClientMessage) -> None:
            kind = msg.WhichOneof("kind")
            rid = msg.request_id
            if kind == "ping":
                await out.put(pb.ServerMessage(request_id=rid, pong=msg.ping))
            elif kind in ("open_playlist", "watch_playlist_id"):
                if kind == "open_playlist":
                    pid = msg.open_playlist.playlist_id
                    prio = SHEDDABLE if msg.open_playlist.prefetch else CRITICAL
                else:
                    pid, prio = msg.watch_playlist_id, CRITICAL
                try:
                    view = await self._view(pid, prio, self.deadline_s, headers)
                except grpc.aio.AioRpcError as exc:
                    await out.put(
                        pb.ServerMessage(
                            request_id=rid, error=f"{exc.code().name}: {cause('playlistview', exc)}"
                        )
                    )
                    return
                if kind == "watch_playlist_id":
                    watches[pid] = view.revision
                await out.put(pb.ServerMessage(request_id=rid, playlist=view))
            else:
                await out.put(pb.ServerMessage(request_id=rid, error="empty request"))

        async def read() -> None:
            async for msg in request_iterator:
                task = asyncio.create_task(answer(msg))
                pending.add(task)
                task.add_done_callback(pending.discard)
            while pending:
                await asyncio.gather(*list(pending), return_exceptions=True)
            await out.put(None)

        async def poll() -> None:
            while True:
                await asyncio.sleep(self.watch_s)
                for pid, revision in list(watches.items()):
                    try:
                        view = await self._view(pid, SHEDDABLE, self.deadline_s, headers)
                    except grpc.aio.AioRpcError:
                        continue  # try again next round
                    if view.revision != revision and pid in watches:
                        watches[pid] = view.revision
                        await out.put(pb.ServerMessage(playlist_changed_id=pid))

        reader = asyncio.create_task(read())
        poller = asyncio.create_task(poll())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            for task in (reader, poller, *pending):
                task.cancel()
            for task in (reader, poller):
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await task


def build_parser() -> argparse.ArgumentParser:
    parser = runtime.common_parser("accesspoint", "Access point: the perimeter service.")
    parser.add_argument("--tokens", required=True, help="token file: `TOKEN [USER]` per line")
    parser.add_argument("--outbound", help="the sidecar's outbound listener host:port")
    parser.add_argument("--playlistview", help="playlistview address (overrides --outbound)")
    parser.add_argument("--search", help="search address (overrides --outbound)")
    add_client_flags(parser)
    parser.add_argument(
        "--deadline-ms", type=float, default=2000.0, help="inner deadline when the caller sets none"
    )
    parser.add_argument("--watch-interval-ms", type=float, default=1000.0)
    return parser


async def start(args: argparse.Namespace) -> runtime.Running:
    tokens = load_tokens(args.tokens)
    peers = from_args(args, {"playlistview": args.playlistview, "search": args.search})
    await peers.start(("playlistview", "search"))
    service = AccessPointService(
        peers, tokens, args.deadline_ms / 1000.0, args.watch_interval_ms / 1000.0
    )
    running = await runtime.start_server(
        args, lambda s: pb_grpc.add_AccessPointServicer_to_server(service, s), [SERVICE]
    )
    running.cleanups.append(peers.close)
    return running


def main(argv: Sequence[str] | None = None) -> int:
    return runtime.main(build_parser, start, argv)


if __name__ == "__main__":
    raise SystemExit(main())
