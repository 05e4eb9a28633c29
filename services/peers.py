"""Calling peers: one outbound address (the sidecar's), deadlines, header propagation.

Does I/O (gRPC channels). An app talks to every peer through its sidecar's outbound
listener, which routes by gRPC service, so one channel serves all peers; a per-peer
override (tests without a sidecar) gets its own channel. With `--client inprocess
--sidecar-config FILE` the app calls its peers with no hop at all: one
`sidecar.client` channel per peer runs discovery, balancing, breakers and retries
in this process, from the upstreams of that sidecar config.

Errors from a peer are relayed with their status code, and the peer side's reason as
`x-cause: <peer>:<reason>`, never as `x-sidecar-error`: that trailer would claim our
own sidecar made the decision and would make the next sidecar up blame this instance.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

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

    def __init__(
        self,
        outbound: str | None,
        overrides: dict[str, str | None],
        *,
        sidecar_config: str | None = None,
    ) -> None:
        self.outbound = outbound
        self.overrides = {k: v for k, v in overrides.items() if v}
        self.sidecar_config = sidecar_config  # set: peers are called in-process
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._inprocess: dict[str, Any] = {}

    async def start(self, peers: Iterable[str]) -> None:
        """Check every peer has a way to be called; open in-process channels (discovery
        has answered once they are open)."""
        for peer in peers:
            if self.sidecar_config is not None and peer not in self.overrides:
                import sidecar.client

                self._inprocess[peer] = await sidecar.client.connect(peer, self.sidecar_config)
            else:
                self.address(peer)  # fail at start, not on the first call

    def address(self, peer: str) -> str:
        address = self.overrides.get(peer) or self.outbound
        if not address:
            raise ValueError(f"no address for {peer}: give --outbound or --{peer}")
        return address

    def channel(self, peer: str) -> grpc.aio.Channel:
        found = self._inprocess.get(peer)
        if found is not None:
            return found
        address = self.address(peer)
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        for channel in [*self._channels.values(), *self._inprocess.values()]:
            await channel.close()
        self._channels.clear()
        self._inprocess.clear()


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """`--client sidecar|inprocess` and `--sidecar-config FILE`."""
    parser.add_argument(
        "--client",
        choices=("sidecar", "inprocess"),
        default="sidecar",
        help="call peers through the sidecar's outbound listener (default), or in-process "
        "with sidecar.client (needs --sidecar-config)",
    )
    parser.add_argument(
        "--sidecar-config", help="sidecar YAML whose upstreams the in-process client uses"
    )


def from_args(args: argparse.Namespace, overrides: dict[str, str | None]) -> Peers:
    if args.client == "inprocess" and not args.sidecar_config:
        raise SystemExit("--client inprocess needs --sidecar-config FILE")
    config = args.sidecar_config if args.client == "inprocess" else None
    return Peers(args.outbound, overrides, sidecar_config=config)


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
