"""Admin HTTP on loopback (aiohttp): what operators and tests ask the sidecar.

Does I/O (an HTTP listener). It knows nothing of the proxy: the composition root
hands it callables. Others add their own endpoints with `add_route` (e.g. faults).

GET  /live         200 while the process runs
GET  /ready        200 when every upstream has an endpoint, the app answers, not draining;
                   503 with the reasons otherwise
GET  /metrics      Prometheus text, default registry
GET  /clusters     JSON: every upstream's endpoints and their state
GET  /config_dump  JSON: the running config's version and the effective config, secrets
                   redacted
POST /drain        start draining (health NOT_SERVING; listeners stop after the grace)
POST /reload       read the config file again and apply it (added by sidecar/app.py;
                   sidecar/reload/): 200 applied/unchanged, 400 refused with key and reason
GET/POST/DELETE /faults   runtime fault injection (sidecar/admin/faults.py)

Mutating requests (POST, PUT, PATCH, DELETE, on any path, those added by others too)
answer only callers on loopback (or a unix socket) unless `admin.token` is set; with a
token they need `Authorization: Bearer <token>` from anywhere. `sidecar check` refuses
a non-loopback `admin.listen` without a token (sidecar/config.py), and `/config_dump`
masks the token as it masks the TSIG secret.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sidecar.config import is_loopback
from sidecar.endpoint import parse_hostport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refusal(
    method: str, remote: str | None, authorization: str | None, token: str | None
) -> tuple[int, str] | None:
    """Why an admin request may not run, as (HTTP status, message); None: it may."""
    if method not in MUTATING:
        return None
    if token is not None:
        expected = f"Bearer {token}".encode()
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            return 401, "this admin endpoint needs Authorization: Bearer <admin.token>"
        return None
    if not is_loopback(remote):
        return 403, "mutating admin endpoints answer only on loopback unless admin.token is set"
    return None


class AdminServer:
    def __init__(
        self,
        listen: str,
        *,
        ready: Callable[[], list[str]],
        clusters: Callable[[], dict[str, Any]],
        config_dump: Callable[[], dict[str, Any]],
        drain: Callable[[], Awaitable[None]],
        registry: CollectorRegistry,
        token: str | None = None,
    ) -> None:
        self.listen = listen
        self.registry = registry  # what /metrics serves: this sidecar's
        self.token = token
        self.port = 0
        self._ready = ready
        self._clusters = clusters
        self._config_dump = config_dump
        self._drain = drain
        self.app = web.Application(middlewares=[self._guard])
        self.app.router.add_get("/live", self._live)
        self.app.router.add_get("/ready", self._ready_handler)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/clusters", self._clusters_handler)
        self.app.router.add_get("/config_dump", self._config_handler)
        self.app.router.add_post("/drain", self._drain_handler)
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(
            request.method, request.remote, request.headers.get("Authorization"), self.token
        )
        if refused is not None:
            return web.json_response({"error": refused[1]}, status=refused[0])
        return await handler(request)

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Let another module serve its own admin endpoint (before `start`)."""
        self.app.router.add_route(method, path, handler)

    async def start(self) -> int:
        host, port = parse_hostport(self.listen)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here; port 0 needs it
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _ready_handler(self, request: web.Request) -> web.Response:
        reasons = self._ready()
        return web.json_response(
            {"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _clusters_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self._clusters())

    async def _config_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self._config_dump())

    async def _drain_handler(self, request: web.Request) -> web.Response:
        await self._drain()
        return web.json_response({"draining": True})
