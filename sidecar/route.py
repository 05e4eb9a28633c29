"""Outbound routing: which upstream a call goes to, from its `:path` or `:authority`.

Pure (no I/O). `/music.playlist.v1.Playlist/Get` goes to the upstream whose
`grpc_services` lists `music.playlist.v1.Playlist`; failing that, a call whose
`:authority` (port dropped) is an upstream's name goes there, so an app can dial
`playlist` through the sidecar without listing services. The path wins because it is
what every gRPC client sets right; the authority is often just the dialled address.
Only the h2relay data plane passes the authority: grpcio's server API does not expose
it to a handler (FACTS.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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
