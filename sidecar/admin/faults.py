"""Admin endpoints that change the faults in force at runtime (after Envoy's fault filter).

Does I/O (aiohttp handlers); the table itself is pure (sidecar/faults.py). Targets are
upstream names; `app` is the inbound listener's calls to the local app (the same name
the metrics use).

GET    /faults                   the faults in force, by target
POST   /faults                   {"upstream": NAME, "delay": {"percent": P, "ms": MS},
                                  "abort": {"percent": P, "status": "UNAVAILABLE"}}
                                 replaces NAME's faults (either part may be left out)
DELETE /faults                   removes every fault
DELETE /faults?upstream=NAME     removes NAME's faults

A bad request gets HTTP 400 with `{"error": reason, "key": dotted.key}`; nothing changes.
`/config_dump` shows the faults in force in place of the configured ones.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from aiohttp import web

from sidecar.admin.server import AdminServer
from sidecar.config import ConfigError
from sidecar.faults import FaultTable


def _bad(key: str, reason: str) -> web.Response:
    return web.json_response({"error": f"{key}: {reason}", "key": key}, status=400)


class FaultAdmin:
    def __init__(self, table: FaultTable, targets: Collection[str]) -> None:
        self.table = table
        self.targets = sorted(targets)

    def _unknown(self, name: Any) -> web.Response | None:
        if not isinstance(name, str) or not name:
            return _bad("upstream", "required: the upstream name (or `app` for inbound)")
        if name not in self.targets:
            return _bad("upstream", f"unknown upstream {name!r}; known: {', '.join(self.targets)}")
        return None

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.table.dump())

    async def post(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except (UnicodeDecodeError, ValueError) as exc:
            return _bad("", f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _bad("", "the body must be a JSON object")
        name = body.get("upstream")
        refused = self._unknown(name)
        if refused is not None or not isinstance(name, str):
            return refused or _bad("upstream", "required")
        spec = {k: v for k, v in body.items() if k != "upstream"}
        try:
            self.table.set(name, spec)
        except ConfigError as err:
            reason = "unknown key" if "Extra inputs" in err.reason else err.reason
            return _bad(err.key, reason)
        return web.json_response(self.table.dump())

    async def delete(self, request: web.Request) -> web.Response:
        name = request.query.get("upstream")
        if name is not None:
            refused = self._unknown(name)
            if refused is not None:
                return refused
        self.table.clear(name)
        return web.json_response(self.table.dump())

    def add_to(self, admin: AdminServer) -> None:
        admin.add_route("GET", "/faults", self.get)
        admin.add_route("POST", "/faults", self.post)
        admin.add_route("DELETE", "/faults", self.delete)


def with_faults(dump: dict[str, Any], table: FaultTable) -> dict[str, Any]:
    """A config dump with the faults in force in place of the configured ones."""
    for name, upstream in (dump.get("upstreams") or {}).items():
        faults = table.get(name)
        upstream["faults"] = None if faults is None else faults.model_dump(mode="json")
    inbound = dump.get("inbound")
    if inbound is not None:
        faults = table.get("app")
        inbound["faults"] = None if faults is None else faults.model_dump(mode="json")
    return dump
