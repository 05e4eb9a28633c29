"""The in-process client: the sidecar's outbound side inside a Python app, no hop.

    channel = await sidecar.client.connect("playlist", "sidecar.yaml")
    stub = playlist_pb2_grpc.PlaylistStub(channel)   # generated stubs, unchanged
    reply = await stub.Get(request, timeout=0.5)      # the caller's timeout is the deadline

`connect(upstream, config)` takes a `Config`, a path to a YAML file, or the parsed
mapping, in the sidecar's own schema; it runs discovery, balancing, breakers, health
checks, retries and limits for that upstream in this process (sidecar/client/channel.py):
every call, of all four kinds, is a call of the sidecar's own relay (sidecar/h2relay),
fed from an in-memory connection instead of a socket (sidecar/client/link.py).
`connect_sync(upstream, config)` is the same for blocking code: a `grpc.Channel` for
generated sync stubs, driving the async channel from a thread of its own
(sidecar/client/sync.py). Does I/O.
"""

from __future__ import annotations

from sidecar.client.channel import Channel, ClientUpstream, connect, load
from sidecar.client.sync import RpcError, SyncChannel, connect_sync

__all__ = [
    "Channel",
    "ClientUpstream",
    "RpcError",
    "SyncChannel",
    "connect",
    "connect_sync",
    "load",
]
