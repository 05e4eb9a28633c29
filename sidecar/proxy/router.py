"""Outbound routing: which upstream a call goes to, from its `:path`.

Pure (no I/O). `/music.playlist.v1.Playlist/Get` goes to the upstream whose
`grpc_services` lists `music.playlist.v1.Playlist`. Routing by `:authority` is not
offered: grpcio's server API does not expose the authority to a handler (FACTS.md),
so a grpcio-based listener cannot honour it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class Router:
    def __init__(self, services_by_upstream: Mapping[str, Sequence[str]]) -> None:
        self._by_service = {
            svc: name for name, services in services_by_upstream.items() for svc in services
        }

    def route(self, method: str) -> str | None:
        """The upstream name for a full method path, or None (no route)."""
        service, sep, _ = method.lstrip("/").partition("/")
        if not sep:
            return None
        return self._by_service.get(service)
