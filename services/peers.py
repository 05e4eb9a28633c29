"""Calling peers: one outbound address (the sidecar's), deadlines, header propagation.

Does I/O (gRPC channels). An app talks to every peer through its sidecar's outbound
listener, which routes by gRPC service, so one channel serves all peers; a per-peer
override (tests without a sidecar) gets its own channel.

Errors from a peer are relayed with their status code, and the peer side's reason as
`x-cause: <peer>:<reason>`, never as `x-sidecar-error`: that trailer would claim our
own sidecar made the decision and would make the next sidecar up blame this instance.
"""

from __future__ import annotations

import grpc

from services.runtime import MiB

PRIORITY_KEY = "x-sidecar-priority"
CAUSE_KEY = "x-cause"
SIDECAR_ERROR_KEY = "x-sidecar-error"
PROPAGATED = (PRIORITY_KEY, "x-request-id")

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 16 * MiB),
    ("grpc.max_receive_message_length", 16 * MiB),
    ("grpc.enable_retries", 0),  # retrying is the sidecar's job, under its budget
    # The peer is a local sidecar (or, in tests, a local app that may restart): reconnect
    # within a second instead of grpc's default backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Peers:
    """Channels by peer name: the override if given, else the shared outbound address."""

    def __init__(self, outbound: str | None, overrides: dict[str, str | None]) -> None:
        self.outbound = outbound
        self.overrides = {k: v for k, v in overrides.items() if v}
        self._channels: dict[str, grpc.aio.Channel] = {}

    def address(self, peer: str) -> str:
        address = self.overrides.get(peer) or self.outbound
        if not address:
            raise ValueError(f"no address for {peer}: give --outbound or --{peer}")
        return address

    def channel(self, peer: str) -> grpc.aio.Channel:
        address = self.address(peer)
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def propagated(context: grpc.aio.ServicerContext) -> list[tuple[str, str]]:
    """Request headers that travel with the call to the next hop (priority, request id)."""
    return [
        (k, v)
        for k, v in (context.invocation_metadata() or ())
        if k in PROPAGATED and isinstance(v, str)
    ]


def cause(peer: str, error: grpc.aio.AioRpcError) -> str:
    """`peer:reason`: the peer-side sidecar's reason, a relayed cause, or the status."""
    trailers = dict((k, v) for k, v in (error.trailing_metadata() or ()) if isinstance(v, str))
    if SIDECAR_ERROR_KEY in trailers:
        return f"{peer}:{trailers[SIDECAR_ERROR_KEY]}"
    if CAUSE_KEY in trailers:
        return f"{peer}>{trailers[CAUSE_KEY]}"
    return f"{peer}:{error.code().name}"


async def relay(context: grpc.aio.ServicerContext, peer: str, error: grpc.aio.AioRpcError) -> None:
    """Fail this call with the peer's status (abort raises)."""
    await context.abort(
        error.code(), f"{peer}: {error.details()}", ((CAUSE_KEY, cause(peer, error)),)
    )
