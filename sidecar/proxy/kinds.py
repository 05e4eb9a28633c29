"""Which RPC kind each method is: grpcio makes a generic handler commit to one per method.

Pure apart from importing the configured generated modules once at start. A proxied
bidi stream carries every kind correctly on the wire, but costs 40-55% more CPU than a
unary handler for unary calls (FACTS.md), so known methods get their own kind:
1. `method_kinds` in the config (explicit, wins),
2. service descriptors in protobuf's default pool (grpc.health.v1 and every module
   named in `proto_modules`, plus whatever else the process imported),
3. otherwise `bidi`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

from google.protobuf import descriptor_pool

from sidecar.config import MethodKind

_KINDS: dict[tuple[bool, bool], MethodKind] = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi",
}


def load_modules(names: Iterable[str]) -> None:
    """Import generated `*_pb2` modules so their services land in the default pool."""
    for name in names:
        importlib.import_module(name)


class MethodKinds:
    """`kind(method)` for a full method path `/pkg.Service/Method`, memoised."""

    def __init__(self, explicit: Mapping[str, MethodKind] | None = None) -> None:
        self._explicit = {_normalise(k): v for k, v in (explicit or {}).items()}
        self._cache: dict[str, MethodKind] = {}

    def kind(self, method: str) -> MethodKind:
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        found = self._explicit.get(method) or _from_pool(method) or "bidi"
        if len(self._cache) < 10_000:  # paths come from callers: bound the memo
            self._cache[method] = found
        return found


def _normalise(method: str) -> str:
    return method if method.startswith("/") else "/" + method


def _from_pool(method: str) -> MethodKind | None:
    service, _, name = method.lstrip("/").partition("/")
    if not service or not name:
        return None
    try:
        desc = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return None
    m = desc.methods_by_name.get(name)
    if m is None:
        return None
    return _KINDS[(bool(m.client_streaming), bool(m.server_streaming))]
