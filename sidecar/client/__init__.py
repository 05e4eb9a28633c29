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

import os
from collections.abc import Mapping
from typing import Any

from sidecar.client.channel import Channel, Upstream
from sidecar.client.sync import RpcError, SyncChannel, connect_sync
from sidecar.config import Config, load_config, parse_config
from sidecar.policy import Policies

__all__ = ["Channel", "RpcError", "SyncChannel", "Upstream", "connect", "connect_sync", "load"]


def load(config: Config | str | os.PathLike[str] | Mapping[str, Any]) -> Config:
    """A validated Config from any of the accepted forms (ConfigError names a bad key)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config))
    return load_config(os.fspath(config))


async def connect(
    upstream: str,
    config: Config | str | os.PathLike[str] | Mapping[str, Any],
    *,
    policies: Policies | None = None,
    wait_s: float | None = None,
) -> Channel:
    """A channel to `upstream`, started: discovery has had its first answer (or `wait_s`,
    by default twice `discovery.timeout_s`, ran out)."""
    cfg = load(config)
    up = Upstream(upstream, cfg, policies=policies)
    await up.start(wait_s)
    return Channel(up)
