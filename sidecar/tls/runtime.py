"""One sidecar's mTLS, built from its config: the certificate store, what each upstream
must present, the watch on the files, the expiry metric and `GET /tls`.

Does I/O (reads the files, a one-second timer). Used by the composition root
(sidecar/app.py) and the in-process client (sidecar/client/channel.py): the inbound
listener takes `server_context()` (sidecar/tls/transport.py accepts with it), the pool
takes `target(upstream)` for each new connection (its client context, fresh per
connection, and the SPIFFE ID patterns the peer must match). The loopback hops (the
app to its outbound listener, the inbound listener to its app) stay plaintext.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sidecar.tls.certs import CertStore, TlsFiles, peer_identity
from sidecar.tls.identity import IdPattern, SpiffeId
from sidecar.tls.metrics import TlsMetrics
from sidecar.tls.transport import Failures

if TYPE_CHECKING:
    from sidecar.config import Config

log = logging.getLogger("sidecar.tls")
WATCH_S = 1.0  # how often the files' modification stamps are compared


@dataclass(frozen=True, slots=True)
class PeerTarget:
    """How to connect to one upstream's endpoints: TLS, and whom to accept."""

    upstream: str
    store: CertStore
    accept: tuple[IdPattern, ...]
    failures: Failures  # outbound handshake failures, counted and logged

    def context(self) -> ssl.SSLContext:
        return self.store.client_context()  # the current files, per new connection

    def mismatch(self, ssl_object: Any) -> str | None:
        """None when the peer's SPIFFE ID is one this upstream may present, else why not."""
        presented = peer_identity(ssl_object)
        if presented is not None and any(p.matches(presented) for p in self.accept):
            return None
        wanted = ", ".join(p.text for p in self.accept)
        who = presented or "no SPIFFE ID"
        return f"the peer presented {who}, upstream {self.upstream} expects {wanted}"


class MeshTls:
    """The store and the per-upstream targets; `start` watches the files."""

    def __init__(
        self, config: Config, metrics: TlsMetrics | None = None, now: float | None = None
    ) -> None:
        self.metrics = metrics = metrics or TlsMetrics()
        tls = config.tls
        assert tls is not None and config.service is not None  # config.py checked
        self.identity = SpiffeId(config.domain, config.site, config.service)
        files = TlsFiles(tls.cert_file, tls.key_file, tls.ca_file)
        # TlsError (a ValueError naming the tls.* key) when the files are refused at start
        self.store = CertStore(files, self.identity, time.time() if now is None else now)
        self.targets: dict[str, PeerTarget] = {}
        outbound = Failures("outbound", metrics)
        for name, up in config.upstreams.items():
            if not up.tls:
                continue
            texts = up.identities if up.identities is not None else [name]
            accept = tuple(IdPattern.parse(t, config.domain) for t in texts)
            self.targets[name] = PeerTarget(name, self.store, accept, outbound)
        self._timer: asyncio.TimerHandle | None = None
        # one listener context, made once: its SNI callback hands each handshake the
        # store's current certificate and bundle (certs.py), so the files are not read
        # per connection (nor, when a bad new file is on disk, failed on)
        self._server = self.store.server_context()
        store = self.store
        metrics.cert_expiry.set_function(lambda: store.identity.not_after - time.time())

    def target(self, upstream: str) -> PeerTarget | None:
        """TLS toward `upstream`'s endpoints, or None (plaintext: `tls: false`, the app)."""
        return self.targets.get(upstream)

    def server_context(self) -> ssl.SSLContext:
        """The inbound listener's context: each handshake uses the current files."""
        return self._server

    def refresh(self) -> bool:
        refusals = self.store.refusals
        changed = self.store.refresh(time.time())
        if changed:
            self.metrics.reloads.labels("loaded").inc()
        elif self.store.refusals != refusals:
            self.metrics.reloads.labels("refused").inc()
        return changed

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(WATCH_S, self._tick)

    def _tick(self) -> None:
        try:
            self.refresh()
        except Exception:  # a bug of ours must not stop the watch
            log.exception("tls: checking the files failed")
        self.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def snapshot(self) -> dict[str, object]:
        """`GET /tls`: the identity in use, its expiry, the files and the last refusal."""
        out = self.store.identity.snapshot(time.time())
        files = self.store.files
        out.update(
            cert_file=files.cert_file,
            key_file=files.key_file,
            ca_file=files.ca_file,
            reloads=self.store.reloads,
            last_error=self.store.last_error,
            upstreams={n: [p.text for p in t.accept] for n, t in self.targets.items()},
        )
        return out

    def add_admin_routes(self, admin: Any) -> None:
        from aiohttp import web

        async def tls(request: web.Request) -> web.Response:
            return web.json_response(self.snapshot())

        admin.add_route("GET", "/tls", tls)


def check_files(config: Config) -> None:
    """`sidecar check`: the tls files as `run` would load them; TlsError says why not."""
    if config.tls is None or config.service is None:
        return
    from sidecar.tls.certs import check

    tls = config.tls
    check(
        TlsFiles(tls.cert_file, tls.key_file, tls.ca_file),
        SpiffeId(config.domain, config.site, config.service),
        time.time(),
    )
