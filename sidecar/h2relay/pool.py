"""Pooled connections to endpoints (client role): the per-endpoint `Pool` and its
`UpstreamConnection`s, and what they drive, one `UpstreamStream` per HTTP/2 stream (a
relayed call, sidecar/h2relay/call.py, or a gRPC call the sidecar makes as a client,
sidecar/h2relay/grpc_client.py).

Does I/O (sockets, timers). Protocols, not streams: `data_received` feeds the sans-IO
connection (sidecar/h2relay/connection.py), whose handler calls move frames to the
stream. What each connection queued is written once per loop turn (`kick` schedules one
flush), so a burst of frames costs one `write` per connection rather than one per frame.
The bookkeeping of the calls an upstream read answered runs after that read
(`Pool.settle`), so an answer in a burst waits for the earlier answers' frames, not for
their breakers and metrics.

One HTTP/2 connection per endpoint, more only when the peer's MAX_CONCURRENT_STREAMS is
reached or it sent GOAWAY; closed after `channel_idle_timeout_s` without calls. Connect
failures and lost connections go to every stream on them (a relayed call decides:
replay elsewhere, or a sidecar error).

Sits below the call: it knows streams only by the `UpstreamStream` protocol.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sized
from typing import Any, Protocol

from sidecar.endpoint import Endpoint
from sidecar.h2relay import frames as F
from sidecar.h2relay.connection import H2Connection, Settings
from sidecar.h2relay.hpack_codec import Block
from sidecar.outcome import Outcome

log = logging.getLogger(__name__)


class _Kickable(Protocol):
    def kick(self) -> None: ...


class UpstreamStream(Protocol):
    """What an `UpstreamConnection` drives, one per stream it carries: a relayed `Call`,
    or a gRPC call the sidecar makes as a client (sidecar/h2relay/grpc_client.py)."""

    @property
    def down(self) -> _Kickable:
        """Whoever to kick once the stream opened (the caller's connection)."""

    @property
    def up_pending(self) -> Sized:
        """Request bytes held back by flow control (non-empty: `flush_up` on a window)."""

    def open_upstream(self, up: UpstreamConnection) -> None: ...
    def flush_up(self) -> None: ...
    def on_up_headers(self, block: Block, end_stream: bool) -> None: ...
    def on_up_data(self, data: bytes, end_stream: bool, flow: int) -> None: ...
    def on_up_reset(self, code: int) -> None: ...
    def on_up_lost(self, why: str, connect: bool) -> None: ...
    def on_up_refused(self) -> None: ...
    def crashed(self) -> None: ...


class Answered(Protocol):
    """A stream whose upstream answered during the read being handled (`Pool.settle`)."""

    def settle(self, outcome: Outcome) -> None: ...
    def crashed(self) -> None: ...


class Flusher:
    """Write what the connection queued, once per loop turn."""

    transport: asyncio.Transport | None
    conn: H2Connection
    loop: asyncio.AbstractEventLoop
    _scheduled = False

    def kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        self.write_now()

    def write_now(self) -> None:
        """Write what is queued at once (a whole request or answer: it should not wait for
        the rest of the read); a flush already scheduled for this turn still runs."""
        out = self.conn.out
        if out and self.transport is not None:
            self.transport.write(b"".join(out))
        out.clear()


class UpstreamConnection(Flusher, asyncio.Protocol):
    """One pooled connection to an endpoint (client role)."""

    def __init__(self, pool: Pool, endpoint: Endpoint, tls: Any = None, key: str = "") -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.key = key or endpoint.address  # its list in pool.conns
        # sidecar/tls/runtime.py's PeerTarget (None: plaintext), and what went wrong in
        # its handshake (the attempt's failure is then `tls_handshake`, attempt.py)
        self.tls = tls
        self.tls_failure: str | None = None
        self.received = False  # any byte from the peer yet
        self.loop = pool.loop
        self.conn = H2Connection(self, client=True, settings=pool.settings)
        self.calls: dict[int, UpstreamStream] = {}
        self.waiting: list[UpstreamStream] = []  # streams waiting for a slot (or the connection)
        self.blocked: set[UpstreamStream] = (
            set()
        )  # streams whose request waits for the peer's window
        self.transport = None
        self.ready = False
        self.closed = False
        self.last_used = pool.clock()

    def leave(self, stream: UpstreamStream, sid: int, reset: bool) -> None:
        """`stream` leaves this connection: its HTTP/2 stream `sid` closed, or reset with
        CANCEL (`reset`: the peer has not ended its side), or, never opened (`sid` 0), it
        leaves the queue of streams waiting for a slot. The caller kicks the flush."""
        if sid:
            self.calls.pop(sid, None)
            self.blocked.discard(stream)
            if reset:
                self.conn.reset(sid, F.CANCEL)
            else:
                self.conn.close_stream(sid)
        elif stream in self.waiting:
            self.waiting.remove(stream)

    @property
    def usable(self) -> bool:
        """Open to new calls now: a stream slot free under the peer's MAX_CONCURRENT_STREAMS."""
        return self.open_for_calls and (
            len(self.conn.streams) + len(self.waiting) < self.conn.peer_max_streams
        )

    @property
    def open_for_calls(self) -> bool:
        conn = self.conn
        return not self.closed and conn.goaway_received is None and conn.next_stream < 2**31 - 1024

    def has_slot(self) -> bool:
        """A call may open its stream now (none waits before it, the peer allows one more)."""
        return not self.waiting and len(self.conn.streams) < self.conn.peer_max_streams

    def _open_waiting(self) -> None:
        """Calls waiting for a stream slot (MAX_CONCURRENT_STREAMS): open as many as fit."""
        conn = self.conn
        waiting = self.waiting
        while waiting and len(conn.streams) < conn.peer_max_streams and self.open_for_calls:
            call = waiting.pop(0)
            guard(call, call.open_upstream, self)
            call.down.kick()

    async def connect(self) -> None:
        tls = self.tls
        try:
            if tls is None:
                connecting = self.loop.create_connection(
                    lambda: self, self.endpoint.host, self.endpoint.port
                )
            else:
                connecting = self.loop.create_connection(
                    lambda: self,
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=tls.context(),
                    ssl_handshake_timeout=self.pool.connect_timeout_s,
                )
            await asyncio.wait_for(connecting, self.pool.connect_timeout_s)
        except (TimeoutError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            if tls is not None and isinstance(exc, ssl.SSLError):
                why = self._tls_failed(exc)
            self._fail(why, connect=True)

    def _tls_failed(self, exc: BaseException | None, reason: str = "") -> str:
        """Name a failed handshake (counted by reason); the message for the call."""
        from sidecar.tls import transport as tls_transport

        reason = reason or tls_transport.handshake_reason(exc or OSError())
        self.tls_failure = reason
        detail = tls_transport.describe(reason, exc)
        self.tls.failures.failed(reason, self.endpoint.address, detail)
        return f"TLS handshake: {detail}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        tls = self.tls
        if tls is not None:
            # the handshake verified the chain; whom it names is ours to check: the
            # service this upstream means (any site), or its `identities`
            mismatch = tls.mismatch(transport.get_extra_info("ssl_object"))
            if mismatch is not None:
                self._fail(self._tls_failed(ValueError(mismatch), "wrong_identity"), connect=True)
                return
        self.ready = True
        self.flush()  # opens the waiting calls' streams (as many as the peer allows)

    def data_received(self, data: bytes) -> None:
        self.received = True
        failed: tuple[int, str, str] | None = None  # (GOAWAY code, its message, why)
        try:
            self.conn.receive(data)
        except F.ProtocolError as exc:
            failed = (exc.code, str(exc), f"HTTP/2 protocol error from the peer: {exc}")
        except Exception:
            log.exception("relay failed on an upstream connection")
            failed = (F.INTERNAL_ERROR, "sidecar internal error", "sidecar internal error")
        self.pool.settle()  # the calls this read answered, before a failure ends the rest
        if failed is not None:
            self.conn.goaway(failed[0], failed[1])
            self.flush()
            self._fail(failed[2], connect=False)
            return
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.tls is not None and not self.received and self.tls_failure is None:
            # TLS 1.3: the server checks our certificate after our side of the handshake
            # is done; its refusal (an alert, or a close) comes before any HTTP/2 byte,
            # and nothing of ours was processed
            self._fail(self._tls_failed(exc, "" if exc else "other"), connect=True)
            return
        self._fail(str(exc) if exc else "connection closed by the peer", connect=False)

    def _fail(self, why: str, connect: bool) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        calls = list(self.waiting) + list(self.calls.values())
        self.waiting = []
        self.calls = {}
        for call in calls:
            guard(call, call.on_up_lost, why, connect)

    # H2Connection handler
    # each call's step is guarded: a bug in one call ends that call, not the connection
    def on_headers(self, stream_id: int, block: Block, end_stream: bool) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            try:
                call.on_up_headers(block, end_stream)
            except Exception:
                call.crashed()

    def on_oversized(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        self.conn.reset(stream_id, F.CANCEL)
        if call is not None:
            guard(call, call.on_up_reset, F.ENHANCE_YOUR_CALM)

    def on_data(self, stream_id: int, data: bytes, end_stream: bool, flow: int) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            self.conn.consumed(stream_id, flow)
            return
        try:
            call.on_up_data(data, end_stream, flow)
        except Exception:
            call.crashed()

    def on_reset(self, stream_id: int, code: int) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            guard(call, call.on_up_reset, code)

    def on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            for call in list(self.blocked):
                guard(call, call.flush_up)
        else:
            found = self.calls.get(stream_id)
            if found is not None and found.up_pending:
                guard(found, found.flush_up)

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        self.pool.forget(self)
        refused = [c for s, c in self.calls.items() if s > last_stream_id] + self.waiting
        for call in refused:
            guard(call, call.on_up_refused)
        if not self.calls and self.transport is not None:
            self.transport.close()

    def flush(self) -> None:
        self.last_used = self.pool.clock()  # once per loop turn, not on every kick
        if self.waiting and self.ready:
            self._open_waiting()
        Flusher.flush(self)


class Pool:
    """Pooled HTTP/2 connections per endpoint address."""

    def __init__(
        self,
        settings: Settings | None = None,
        idle_s: float = 300.0,
        connect_timeout_s: float = 5,
        max_conns: int = 8,
        clock: Callable[[], float] = time.monotonic,
        tls: Any = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.clock = clock  # idle times (a seam for tests on fake time, as Plane.clock)
        # sidecar/tls/runtime.py's MeshTls: `target(upstream)` says how to reach an
        # upstream's endpoints over mTLS (None: every connection is plaintext)
        self.tls = tls
        # connections per endpoint: beyond this, calls wait for a stream slot rather than
        # opening ever more connections to a peer that said how many streams it takes
        self.max_conns = max_conns
        self.settings = settings or Settings()
        self.idle_s = idle_s
        self.connect_timeout_s = connect_timeout_s
        self.conns: dict[str, list[UpstreamConnection]] = {}
        # calls answered during the upstream read being handled, and how their attempt
        # ended: their bookkeeping runs once the read is done (settle)
        self.answered: list[tuple[Answered, Outcome]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def get(self, endpoint: Endpoint, upstream: str = "") -> UpstreamConnection:
        """A connection with a free stream slot; a new one while under `max_conns`; else
        the least loaded, where the call waits for a slot (counted by max_pending).
        Over mTLS, connections are kept per upstream too: each checks its own peer ID."""
        address = endpoint.address
        target = self.tls.target(upstream) if self.tls is not None and upstream else None
        if target is not None:
            address = f"{address}/{upstream}"
        conns = self.conns.get(address)
        if conns:
            for up in conns:
                if up.usable:
                    return up
            if len(conns) >= self.max_conns:
                open_ = [up for up in conns if up.open_for_calls]
                if open_:
                    return min(open_, key=lambda u: len(u.conn.streams) + len(u.waiting))
        else:
            conns = self.conns[address] = []
        up = UpstreamConnection(self, endpoint, target, address)
        conns.append(up)
        task = self.loop.create_task(up.connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return up

    def settle(self) -> None:
        """The bookkeeping of the calls answered during the read just handled. Nothing
        else of theirs can happen meanwhile: their upstream stream has ended, and their
        caller's connection is read only after this read."""
        answered = self.answered
        if answered:
            self.answered = []
            for call, outcome in answered:
                try:
                    call.settle(outcome)
                except Exception:
                    call.crashed()

    def forget(self, up: UpstreamConnection) -> None:
        conns = self.conns.get(up.key)
        if conns is not None and up in conns:
            conns.remove(up)
            if not conns:
                del self.conns[up.key]

    def start(self) -> None:
        self._sweeper = self.loop.call_later(max(1.0, self.idle_s / 4), self._sweep)

    def _sweep(self) -> None:
        now = self.clock()
        for conns in list(self.conns.values()):
            for up in list(conns):
                if up.ready and not up.calls and now - up.last_used >= self.idle_s:
                    self.forget(up)
                    up.closed = True
                    if up.transport is not None:
                        up.transport.close()
        self.start()

    def __len__(self) -> int:
        return sum(len(c) for c in self.conns.values())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conns in list(self.conns.values()):
            for up in list(conns):
                up.closed = True
                if up.transport is not None:
                    up.transport.close()
        self.conns.clear()


def guard(call: Any, step: Callable[..., None], *args: Any) -> None:
    """Run one event handler of a call: a bug there ends that call only (with INTERNAL and a
    log line, see sidecar/h2relay/call.py, Call.crashed), never the connection it shares with other calls."""
    try:
        step(*args)
    except Exception:
        call.crashed()
