"""Routing: which upstream a call goes to (`Router`, from its `:path` or `:authority`), and
the `Route` a call then follows (the upstream's cluster and per-upstream policies).

Pure (no I/O). `/music.playlist.v1.Playlist/Get` goes to the upstream whose
`grpc_services` lists `music.playlist.v1.Playlist`; failing that, a call whose
`:authority` (port dropped) is an upstream's name goes there, so an app can dial
`playlist` through the sidecar without listing services. The path wins because it is
what every gRPC client sets right; the authority is often just the dialled address.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.cluster import Cluster
from sidecar.config import RouteConfig, UpstreamConfig
from sidecar.policy import CallPolicy, OneAttempt
from sidecar.retry.hedging import Hedging


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
    # a `routes[]` entry's weighted split (sidecar/route_rules.py): the call picks one of
    # its backend Routes per call (h2relay/call.py, step 1); this Route is only a carrier
    split: Any = None  # route_rules.WeightedSplit | None
    mirror: Any = None  # h2relay.mirror.Mirror | None: a share of calls copied to a shadow
    # sidecar/ratelimit.py's InboundLimits (the app's route) or UpstreamLimit: a call
    # takes a token before admission and the upstream's limits (h2relay/call.py, step 3)
    rate_limit: Any = None
    hedging: Hedging | None = None  # copies of a call (gRPC A6), never with retries

    @classmethod
    def from_config(
        cls,
        name: str,
        config: UpstreamConfig,
        cluster: Cluster,
        calls: CallPolicy,
        hedging: Hedging | None = None,
    ) -> Route:
        """The route to upstream `name` as its config section says (sidecar and client
        alike); `hedging`: its `hedging_policy`, built by the composition root's factory."""
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
            hedging=hedging,
        )

    def for_rule(self, spec: RouteConfig, calls: CallPolicy | None) -> Route:
        """This upstream's route as a `routes[]` entry changes it: its own timeout,
        per-try timeout and (with `calls`, built from `spec.retries`) retry policy."""
        changes: dict[str, Any] = {}
        if spec.timeout_ms is not None:
            changes["default_timeout_s"] = spec.timeout_ms / 1000
        if spec.per_try_timeout_ms is not None:
            changes["per_try_timeout_s"] = spec.per_try_timeout_ms / 1000
        if calls is not None:
            changes["calls"] = calls
            if spec.retries is not None:
                changes["replay_bytes"] = spec.retries.buffer_bytes
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def splitting(cls, backends: Sequence[Route], split: Any) -> Route:
        """The carrier of a weighted split over `backends`: named after the first, with
        the balancer hash key they share (None if they differ)."""
        keys = {b.hash_key for b in backends}
        first = backends[0]
        return cls(
            first.name,
            first.cluster,
            first.default_timeout_s,
            keys.pop() if len(keys) == 1 else None,
            split=split,
        )
