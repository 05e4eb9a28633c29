"""Routing: which upstream a call goes to (`Router`, from its `:path` or `:authority`), and
the `Route` a call then follows (the upstream's cluster and per-upstream policies).

Pure (no I/O). `/music.playlist.v1.Playlist/Get` goes to the upstream whose
`grpc_services` lists `music.playlist.v1.Playlist`; failing that, a call whose
`:authority` (port dropped) is an upstream's name goes there, so an app can dial
`playlist` through the sidecar without listing services. The path wins because it is
what every gRPC client sets right; the authority is often just the dialled address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sidecar.cluster import Cluster
from sidecar.config import UpstreamConfig
from sidecar.policy import CallPolicy, OneAttempt


class Router:
    def __init__(self, services_by_upstream: Mapping[str, Sequence[str]]) -> None:
        self._by_service = {
            svc: name for name, services in services_by_upstream.items() for svc in services
        }
        self._upstreams = frozenset(services_by_upstream)

    def route(self, method: str, authority: str | None = None) -> str | None:
        """The upstream name for a full method path (or else the authority), or None."""
        service, sep, _ = method.lstrip("/").partition("/")
        name = self._by_service.get(service) if sep else None
        if name is None and authority:
            host = authority if authority.startswith("[") else authority.partition(":")[0]
            name = host if host in self._upstreams else None
        return name


@dataclass
class Route:
    """Where a call goes and the per-upstream policies on its way."""

    name: str  # upstream name, or "app" inbound
    cluster: Cluster
    default_timeout_s: float | None  # when the caller sent no deadline
    hash_key: str | None = None  # request metadata key for hash-based picks
    calls: CallPolicy = field(default_factory=OneAttempt)
    per_try_timeout_s: float | None = None
    replay_bytes: int = 0  # request streams are buffered for a retry up to this size

    @classmethod
    def from_config(
        cls, name: str, config: UpstreamConfig, cluster: Cluster, calls: CallPolicy
    ) -> Route:
        """The route to upstream `name` as its config section says (sidecar and client alike)."""
        return cls(
            name,
            cluster,
            config.timeout_ms / 1000,
            config.hash_key,
            calls=calls,
            per_try_timeout_s=None
            if config.per_try_timeout_ms is None
            else config.per_try_timeout_ms / 1000,
            replay_bytes=config.retries.buffer_bytes if config.retries is not None else 0,
        )
