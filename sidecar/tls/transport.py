"""mTLS on the relay's sockets: the inbound accept loop (strict or permissive) and the
names of what went wrong in a handshake.

Does I/O (accepts sockets, runs TLS handshakes). The inbound listener accepts each
socket itself rather than through `loop.create_server(ssl=...)`, for two reasons: under
`inbound.mtls: permissive` the first byte tells a TLS caller (a ClientHello record,
0x16) from a plaintext HTTP/2 one (the preface, "PRI * HTTP/2.0"), read with MSG_PEEK
so that the byte stays for whoever reads next; and a failed handshake is counted by its
reason here, where asyncio would only log it. Either way the socket then goes to
`loop.connect_accepted_socket(factory, sock, ssl=context or None)`, so the relay's
Downstream protocol is the same for both kinds of caller.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from sidecar.tls.metrics import TlsMetrics

log = logging.getLogger("sidecar.tls")

_TLS_RECORD_HANDSHAKE = 0x16  # RFC 8446 §5.1 ContentType handshake: a ClientHello

# reason label -> the words an operator reads in `x-sidecar-error: tls_handshake` messages
REASONS = {
    "unknown_ca": "unknown CA",
    "expired": "certificate expired",
    "not_yet_valid": "certificate not valid yet",
    "wrong_identity": "wrong identity",
    "no_certificate": "no certificate",
    "bad_certificate": "bad certificate",
    "plaintext": "plaintext caller on a TLS-only listener",
    "timeout": "handshake timed out",
    "other": "handshake failed",
}
# X.509 verify codes (OpenSSL x509_vfy.h) for the reasons above
_VERIFY = {
    2: "unknown_ca",  # unable to get issuer certificate
    9: "not_yet_valid",
    10: "expired",
    18: "unknown_ca",  # self-signed leaf
    19: "unknown_ca",  # self-signed certificate in chain
    20: "unknown_ca",  # unable to get local issuer certificate
    21: "unknown_ca",  # unable to verify the first certificate
}
# OpenSSL reason strings (the peer's alert, or our own check)
_ALERTS = (
    ("UNKNOWN_CA", "unknown_ca"),
    ("CERTIFICATE_EXPIRED", "expired"),
    ("CERTIFICATE_REQUIRED", "no_certificate"),
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "no_certificate"),
    ("BAD_CERTIFICATE", "bad_certificate"),
    ("WRONG_VERSION_NUMBER", "plaintext"),
    ("HTTP_REQUEST", "plaintext"),
    ("RECORD_LAYER_FAILURE", "plaintext"),
)


def handshake_reason(exc: BaseException) -> str:
    """The REASONS key for an exception raised by a TLS handshake (either side)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY.get(exc.verify_code, "bad_certificate")
    if isinstance(exc, ssl.SSLError):
        text = f"{exc.reason or ''} {exc}".upper()
        for needle, reason in _ALERTS:
            if needle in text:
                return reason
        return "other"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"


def describe(reason: str, exc: BaseException | None = None) -> str:
    """`unknown CA (certificate verify failed: ...)`: the reason, then OpenSSL's words."""
    words = REASONS.get(reason, reason)
    detail = ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or ""
    elif isinstance(exc, ssl.SSLError):
        detail = exc.reason or str(exc)
    elif exc is not None:
        detail = str(exc)
    return f"{words} ({detail})" if detail and detail.lower() != words else words


class Failures:
    """Handshake failures by reason, with one log line per reason every 10 s (a
    misconfigured peer reconnects in a loop)."""

    def __init__(self, direction: str, metrics: TlsMetrics) -> None:
        self.direction = direction
        self.metrics = metrics
        self._logged: dict[str, float] = {}

    def failed(self, reason: str, peer: object, detail: str) -> None:
        self.metrics.handshake_failures.labels(self.direction, reason).inc()
        now = time.monotonic()
        if now - self._logged.get(reason, -1e9) >= 10.0:
            self._logged[reason] = now
            log.warning("%s TLS handshake with %s failed: %s", self.direction, peer, detail)


class Acceptor:
    """The inbound listener's own accept loop (module docstring). `mode`: strict (TLS
    callers only) or permissive (TLS and plaintext callers on one port)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        context: Callable[[], ssl.SSLContext],
        mode: str,
        handshake_timeout_s: float,
        metrics: TlsMetrics | None = None,
        max_pending: int = 1024,
    ) -> None:
        self.loop = loop
        self.factory = factory
        self.context = context
        self.mode = mode
        self.timeout_s = handshake_timeout_s
        # sockets not handed over yet (waiting for a first byte, or in the handshake), each
        # bounded by `handshake_timeout_s`; beyond this many a new one is closed at once,
        # so that callers that never finish a handshake cannot pile up
        self.max_pending = max_pending
        self.metrics = metrics = metrics or TlsMetrics()
        self.counted = Failures("inbound", metrics)
        self.sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int, reuse_port: bool) -> int:
        info = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(info[4])
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._task = self.loop.create_task(self._accept())
        return int(sock.getsockname()[1])

    async def _accept(self) -> None:
        sock = self.sock
        assert sock is not None
        while True:
            try:
                conn, peer = await self.loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # EMFILE and friends: wait a little, do not spin
                log.warning("inbound accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self._handshakes) >= self.max_pending:
                self.counted.failed("timeout", peer, "too many handshakes in progress")
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self.loop.create_task(self._handshake(conn, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _first_byte(self, conn: socket.socket) -> bytes:
        """The caller's first byte, left in the socket (MSG_PEEK)."""
        ready = self.loop.create_future()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        fd = conn.fileno()
        self.loop.add_reader(fd, readable)
        try:
            await ready
        finally:
            self.loop.remove_reader(fd)
        return conn.recv(1, socket.MSG_PEEK)

    async def _handshake(self, conn: socket.socket, peer: Any) -> None:
        secure = True
        try:
            first = await asyncio.wait_for(self._first_byte(conn), self.timeout_s)
            if not first:
                conn.close()  # gone before saying anything
                return
            secure = first[0] == _TLS_RECORD_HANDSHAKE
            if not secure:
                if self.mode != "permissive":
                    self.counted.failed("plaintext", peer, describe("plaintext"))
                    conn.close()
                    return
                self.metrics.plaintext_connections.inc()
            await self.loop.connect_accepted_socket(
                self.factory,
                conn,
                ssl=self.context() if secure else None,
                ssl_handshake_timeout=self.timeout_s if secure else None,
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = handshake_reason(exc)
            self.counted.failed(reason, peer, describe(reason, exc))
            conn.close()

    def close(self) -> None:
        """Stop accepting (connections already made go on)."""
        if self._task is not None:
            self._task.cancel()
        for task in list(self._handshakes):
            task.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
