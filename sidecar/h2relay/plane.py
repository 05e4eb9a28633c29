"""The relay's caller side: the listener (`Plane`) and the asyncio protocol for each
caller's connection (`Downstream`).

Does I/O (sockets, timers). Protocols, not streams: `data_received` feeds the sans-IO
connection (sidecar/h2relay/connection.py), whose handler calls move frames to the call
(sidecar/h2relay/call.py). What each connection queued is written once per loop turn
(`kick` schedules one flush), so a burst of frames costs one `write` per connection
rather than one per frame; but a whole request or answer is written at once
(`write_now`) rather than after the rest of the read. Upstream connections are the
pool's (sidecar/h2relay/pool.py).

Abuse limits on a caller's connection (the `http2` block of each listener, README):
the sans-IO connection counts what a frame tells (CONTINUATION, HPACK, empty and
control frames); a Downstream adds what needs time or sockets: premature resets (Rapid
Reset, CVE-2023-44487), control frames the caller does not read, per-phase timeouts and
idle connections (Slowloris), and `max_connections` per listener. A tripped limit is
counted in `sidecar_h2_abuse_total{direction,kind}`, logged once per connection, and
(but for a header list refused on its stream) answered GOAWAY and a close.

Sits below the call: it drives each caller's stream through the `RelayedCall` protocol
and makes them with the factory it is given (`Call`, sidecar/h2relay/listeners.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from sidecar.h2relay import frames as F
from sidecar.h2relay.connection import H2Connection, Settings
from sidecar.h2relay.hpack_codec import Block, encode_literal
from sidecar.h2relay.local_reply import LocalMethod
from sidecar.h2relay.pool import Flusher, Pool, guard
from sidecar.h2relay.request import Prepared, prepare, prepare_split
from sidecar.h2relay.timers import Wheel
from sidecar.loop_metrics import HistogramCells, counter_cell
from sidecar.metrics import PlaneMetrics
from sidecar.outcome import Outcome
from sidecar.policy import AdmissionPolicy, AdmitAll, FaultInjector, NoFaults

log = logging.getLogger(__name__)

# once a connection is closed for abuse, how long its queued bytes (the GOAWAY) may take
# to drain to a caller that reads slowly, or not at all, before the socket is dropped
CLOSE_GRACE_S = 2.0
# kinds that are housekeeping rather than abuse: logged at INFO, not WARNING
_HOUSEKEEPING = ("idle_timeout", "max_connections")

CALLER = b"x-sidecar-caller"  # an mTLS caller's SPIFFE ID, toward the app (call.py)

# set in `sidecar run --workers N` workers (sidecar/workers.py): listeners share their port
REUSE_PORT = False


def _counter(child: Any) -> Any:
    """This plane's lock-free cell of the child (sidecar/loop_metrics.py), else the child itself."""
    return counter_cell(child) or child


class RelayedCall(Protocol):
    """What a Downstream drives, one per caller's stream (sidecar/h2relay/call.py's `Call`),
    and what the Plane's metrics read of it when it ends."""

    req: Prepared
    started: float
    req_ended: bool
    code: str
    local_reason: str | None

    @property
    def down_pending(self) -> Any:
        """Answer bytes held back by the caller's window (non-empty: `flush_down` on one)."""

    def start(self) -> None: ...
    def on_data(self, data: bytes, end_stream: bool, flow: int) -> None: ...
    def on_reset(self, code: int) -> None: ...
    def flush_down(self) -> None: ...
    def crashed(self) -> None: ...


# makes the call for a caller's new stream: (plane, connection, stream id, request)
CallFactory = Callable[["Plane", "Downstream", int, Prepared], RelayedCall]


class Plane:
    """One listener's relay: the policies and what all its connections share."""

    def __init__(
        self,
        direction: str,
        resolve: Callable[[str, str | None], Any],
        pool: Pool,
        *,
        new_call: CallFactory,
        max_message_bytes: int,
        admission: AdmissionPolicy | None = None,
        faults: FaultInjector | None = None,
        retry_buffer: int = 1 << 20,
        local_methods: dict[str, LocalMethod] | None = None,
        settings: Settings | None = None,
        access_log: Any = None,
        metrics: PlaneMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        authz: Any = None,
        tls: Any = None,
        tracer: Any = None,
    ) -> None:
        self.direction = direction
        # the one clock of this listener's calls, their connections and timers: a seam
        # for tests on fake time (sidecar/testing/clock.py), read as `plane.clock()`
        self.clock = clock
        self.resolve = resolve
        self.pool = pool
        self.new_call = new_call
        self.metrics = metrics or PlaneMetrics()
        self.loop = asyncio.get_running_loop()
        self.max_message_bytes = max_message_bytes
        self.admission: AdmissionPolicy = admission or AdmitAll()
        self.admit_all = isinstance(self.admission, AdmitAll)
        self.faults: FaultInjector = faults or NoFaults()
        self.retry_buffer = retry_buffer
        self.local_methods = local_methods or {}
        self.settings = settings or Settings()
        # sidecar/access_log.py's AccessLog, or None: a listener without one pays one
        # attribute check per call (call_done) and nothing per connection or frame
        self.access_log = access_log
        # inbound: sidecar/authz/step.py's InboundAuthz (None: every caller may call),
        # and the TLS callers must speak: (the listener's context, the mtls mode, the
        # sidecar's TlsMetrics), or None
        self.authz = authz
        self.tls: tuple[Callable[[], Any], str, Any] | None = tls
        # sidecar/tracing/export.py's Tracer, or None (`tracing: off`): one check per call
        # (Call.start); a call that is sampled or failed hands itself to it at its end
        self.tracer = tracer
        self.wheel = Wheel(self.loop, clock=clock)  # call deadlines and per-try timeouts
        self.connections: set[Downstream] = set()
        # connections closing after our GOAWAY (Downstream.close): not counted against
        # max_connections, so that closed attackers do not crowd out new callers
        self.lingering: set[Downstream] = set()
        self.draining = False
        self._draining: set[asyncio.Task[None]] = set()  # old listeners' connections
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # metric children, cached: label lookups cost more than the increments
        self._children: dict[tuple[str, ...], Any] = {}
        self._in_flight: dict[str, int] = {}
        # bumped when a config reload changes what `resolve` answers: the route lookups
        # cached on decoded header blocks (request.py) are then done again
        self.generation = 0

    # ---- config reload (sidecar/reload/parts.py): new calls see the new objects ------

    def routes_changed(self) -> None:
        self.generation += 1

    def set_admission(self, admission: AdmissionPolicy) -> None:
        """Calls admitted from now on; tokens the old one gave release to it."""
        self.admission = admission
        self.admit_all = isinstance(admission, AdmitAll)

    # ---- metrics (cheap: children cached per label set) ----------------------------

    def calls_started(self, call: RelayedCall) -> None:
        upstream = call.req.route.name if call.req.route is not None else "-"
        counts = self._in_flight
        if upstream not in counts:
            counts[upstream] = 0
            # read at scrape time: no locked gauge update on every call start and end
            self.metrics.in_flight.labels(self.direction, upstream).set_function(
                lambda: counts[upstream]
            )
        counts[upstream] += 1

    def call_done(self, call: RelayedCall) -> None:
        route = call.req.route
        upstream = route.name if route is not None else "-"
        method = call.req.method if route is not None else "-"
        self._in_flight[upstream] -= 1
        children = self._children
        key = ("r", upstream, method, call.code)
        counter = children.get(key)
        if counter is None:
            counter = children[key] = _counter(
                self.metrics.requests.labels(self.direction, upstream, method, call.code)
            )
        counter.inc(1)
        hkey = ("d", upstream, method)
        histogram = children.get(hkey)
        if histogram is None:
            child = self.metrics.duration.labels(self.direction, upstream, method)
            histogram = children[hkey] = HistogramCells.of(child) or child
        histogram.observe(self.clock() - call.started)
        if call.local_reason is not None:
            self.metrics.local_errors.labels(self.direction, upstream, call.local_reason).inc()
        if self.access_log is not None:
            self.access_log.record(call)

    def attempt_done(self, upstream: str, address: str, outcome: Outcome) -> None:
        key = ("a", upstream, address, outcome.value)
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = _counter(
                self.metrics.attempts.labels(self.direction, *key[1:])
            )
        counter.inc(1)

    def abuse(self, kind: str) -> None:
        key = ("x", kind)
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = self.metrics.h2_abuse.labels(self.direction, kind)
        counter.inc()

    # ---- listening ------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        if self.tls is not None:
            return await self._listen_tls(host, port, self.access_log is not None)
        self._server, bound = await self.bind(host, port)
        await self._server.start_serving()
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(1.0, self._sweep)
        return bound

    async def bind(self, host: str, port: int) -> tuple[asyncio.Server, int]:
        """A socket bound for this plane, not yet accepting (`start_serving`), and its
        port; OSError when the address cannot be had."""
        logged = self.access_log is not None
        if self.tls is not None:
            # a reload that moves an mTLS listener is refused (sidecar/tls/transport.py
            # accepts its sockets itself): the sidecar must restart on the new address
            raise OSError("an inbound listener with mTLS cannot move on reload: restart")
        server: Any = await self.loop.create_server(
            lambda: LoggedDownstream(self) if logged else Downstream(self),
            host,
            port,
            reuse_address=True,
            reuse_port=REUSE_PORT or None,
            start_serving=False,
        )
        # uvloop's: `sockets` is a list (a tuple in typeshed)
        return server, int(server.sockets[0].getsockname()[1])

    def swap_server(self, server: asyncio.Server) -> tuple[asyncio.Server | None, set[Downstream]]:
        """A config reload moved the listener: the old socket stops accepting now (the
        new one accepts once its `start_serving` runs); returns it with the connections
        it accepted, for `drain_old`."""
        old, self._server = self._server, server
        if old is not None:
            old.close()
        return old, set(self.connections)

    def drain_old(self, old: tuple[asyncio.Server | None, set[Downstream]], grace_s: float) -> None:
        """The old listener's connections: GOAWAY now, closed once their calls ended or
        after `grace_s` (as `stop` does for all of them)."""
        downs = old[1]
        for down in downs:
            down.conn.goaway(F.NO_ERROR, "listener moved (config reload)")
            down.flush()

        async def close_when_done() -> None:
            end = time.monotonic() + grace_s
            while any(d.calls for d in downs) and time.monotonic() < end:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # calls end on frames, not on an event
            for down in downs:
                if down.transport is not None:
                    down.transport.close()

        task = self.loop.create_task(close_when_done())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _listen_tls(self, host: str, port: int, logged: bool) -> int:
        """mTLS callers (and plaintext ones under `permissive`): sidecar/tls/transport.py
        accepts each socket itself, then hands it over as create_server would."""
        from sidecar.tls.transport import Acceptor

        assert self.tls is not None
        context, mode, tls_metrics = self.tls
        acceptor = Acceptor(
            self.loop,
            lambda: LoggedDownstream(self) if logged else Downstream(self),
            context,
            mode,
            self.settings.preface_timeout_s,
            tls_metrics,
            self.settings.max_connections,
        )
        bound = await acceptor.listen(host, port, REUSE_PORT)
        self._server = acceptor  # type: ignore[assignment]  # close() is all stop() needs
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(1.0, self._sweep)
        return bound

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, GOAWAY every caller, let calls finish within `grace_s`."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for down in list(self.connections):
            down.conn.goaway(F.NO_ERROR, "sidecar draining")
            down.flush()
        end = self.clock() + grace_s
        while any(d.calls for d in self.connections) and self.clock() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # calls end on frames, not on an event we could await
        for down in [*self.connections, *self.lingering]:
            if down.transport is not None:
                down.transport.close()
        for task in list(self._draining):  # old listeners' connections: closed above
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.wheel.close()

    def _sweep(self) -> None:
        """Once a second, every connection: the time limits, and a new second of the
        control-frame budget. O(connections) a second, nothing on the per-frame path."""
        now = self.clock()
        for down in [*self.connections, *self.lingering]:
            try:
                down.sweep(now)
            except Exception:
                log.exception("relay failed while checking a caller's connection")
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def make_room(self, new: Downstream) -> bool:
        """At `max_connections`: close the connection idle the longest (no calls), else
        refuse the new one. False: refused."""
        victim: Downstream | None = None
        for down in self.connections:
            if down.closing or down.calls or down is new:
                continue
            if victim is None or down.idle_since < victim.idle_since:
                victim = down
        if victim is None:
            return False
        victim.abused("max_connections", "idle connection closed: the listener is full")
        victim.close(F.NO_ERROR, "idle connection closed: listener at max_connections")
        return True


class Downstream(Flusher, asyncio.Protocol):
    """A caller's connection to this listener (server role)."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        self.loop = plane.loop
        self.conn = H2Connection(self, client=False, settings=plane.settings)
        self.calls: dict[int, RelayedCall] = {}
        self.blocked: set[RelayedCall] = set()  # calls whose answer waits for the caller's window
        self.transport = None
        self.limits = plane.settings
        now = plane.clock()
        self.opened_at = now
        self.idle_since = now  # when its last call started (or it opened)
        self.seen_stream = 0  # the caller's highest stream id at the last sweep
        self.partial_since = 0.0  # when a frame / header block was left incomplete
        self.premature = 0  # streams the caller reset early (Rapid Reset)
        self.control_pending = 0  # control frames queued while the caller is not reading
        self.closing = False
        self.draining = False  # closing, but frames of the calls still open are read
        self.shut = False  # our side of the socket is shut: nothing more is written
        self.logged = False
        # CVE-2019-9517: answer DATA its calls hold (call.py's _hold), and whether the
        # transport asked us to stop writing (the caller is not reading its socket)
        self.held = 0
        self.write_paused = False
        self.taken = 0  # held bytes the caller took since it opened
        self.taken_seen = -1  # ... as of the last sweep
        self.stalled_since = 0.0  # since when it holds over the limit and takes nothing
        # an mTLS caller's SPIFFE ID (None: plaintext), and the `x-sidecar-caller` field
        # the call adds toward the app (call.py), encoded once per connection
        self.caller: str | None = None
        self.caller_field = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        plane = self.plane
        if plane.tls is not None:
            self._identify(transport)
        if len(plane.connections) >= self.limits.max_connections and not plane.make_room(self):
            self.abused("max_connections", "new connection refused: the listener is full")
            self.close(F.ENHANCE_YOUR_CALM, "listener at max_connections")
            return
        plane.connections.add(self)
        self.flush()

    def _identify(self, transport: asyncio.BaseTransport) -> None:
        from sidecar.tls.certs import peer_identity

        caller = peer_identity(transport.get_extra_info("ssl_object"))
        self.caller = caller
        if caller is not None:
            self.caller_field = encode_literal(CALLER, caller.encode())

    def data_received(self, data: bytes) -> None:
        if self.closing and not self.draining:
            return  # after our GOAWAY: read and dropped (see close)
        conn = self.conn
        try:
            conn.receive(data)
        except F.ProtocolError as exc:
            if exc.kind:
                self.abused(exc.kind, str(exc))
            self.close(exc.code, str(exc), drain=exc.kind == "rapid_reset")
            return
        except Exception:
            # a bug of ours: lose this connection, not the process
            log.exception("relay failed on a caller's connection")
            self.close(F.INTERNAL_ERROR, "sidecar internal error")
            return
        if conn.partial:
            if not self.partial_since:
                self.partial_since = self.plane.clock()
        elif self.partial_since:
            self.partial_since = 0.0
        if conn.control_out:
            self._control_out()
        self.flush()

    def _control_out(self) -> None:
        """Control frames we queued in answer (ACKs, RST_STREAM) count while the caller
        is not reading what we wrote before (our write buffer is not empty): past
        `max_outbound_control_frames` (Envoy's, and Go's maxQueuedControlFrames, for
        CVE-2019-9512/9515), the connection ends."""
        conn = self.conn
        transport = self.transport
        behind = transport is not None and transport.get_write_buffer_size() > 0
        pending = (self.control_pending if behind else 0) + conn.control_out
        conn.control_out = 0
        self.control_pending = pending
        if pending > self.limits.max_outbound_control:
            self.abused("control_flood", f"{pending} control frames queued, the caller not reading")
            self.close(F.ENHANCE_YOUR_CALM, "too many control frames queued")

    def abused(self, kind: str, detail: str) -> None:
        """Count an abuse limit tripped on this connection; log the first one only."""
        self.plane.abuse(kind)
        if self.logged:
            return
        self.logged = True
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        level = logging.INFO if kind in _HOUSEKEEPING else logging.WARNING
        log.log(level, "%s HTTP/2 caller %s: %s (%s)", self.plane.direction, peer, kind, detail)

    def close(self, code: int, message: str, drain: bool = False) -> None:
        """GOAWAY(code), then a lingering close: our side is shut (FIN after the GOAWAY)
        while what the caller still sends is read and dropped, since closing a socket
        with unread input resets it and loses the GOAWAY on the way. The socket goes
        when the caller closes too, or after CLOSE_GRACE_S, which also bounds a caller
        that does not read at all. `drain`: calls still open may finish first, within
        CLOSE_GRACE_S, their frames still read while new streams are refused (a pooled
        connection of another sidecar carries many callers' calls, and only some of
        them were reset)."""
        if self.closing:
            if self.draining and not drain:  # a second violation while draining
                self._cancel_calls()
                self._shut()
            return
        if not drain:
            # now, in the turn that read the abuse: a call's upstream HEADERS still queued
            # are withdrawn (H2Connection.reset), the endpoint never sees its stream
            self._cancel_calls()
        self.closing = True
        plane = self.plane
        if self in plane.connections:
            plane.connections.discard(self)
            plane.lingering.add(self)
        self.conn.goaway(code, message)
        self.flush()
        transport = self.transport
        if transport is None:
            return
        self.loop.call_later(CLOSE_GRACE_S, _abort, transport)
        if drain and self.calls:
            self.draining = True
        else:
            self._shut()

    def _cancel_calls(self) -> None:
        for call in list(self.calls.values()):
            try:
                call.on_reset(F.CANCEL)
            except Exception:
                log.exception("relay failed while cancelling a call")

    def _shut(self) -> None:
        self.draining = False
        transport = self.transport
        if transport is None or transport.is_closing() or self.shut:
            return
        self.flush()
        self.shut = True
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def sweep(self, now: float) -> None:
        """The per-phase time limits (Slowloris), once a second from Plane._sweep."""
        if self.closing:
            if self.draining and not self.calls:
                self._shut()  # a draining close whose calls are done
            return
        conn = self.conn
        limits = self.limits
        conn.control_frames = 0  # a new second of the control-frame budget
        if conn.in_preface():
            if now - self.opened_at >= limits.preface_timeout_s:
                self.abused("slow_preface", f"no preface within {limits.preface_timeout_s} s")
                self.close(F.ENHANCE_YOUR_CALM, "connection preface not received in time")
            return
        if self.partial_since and now - self.partial_since >= limits.frame_timeout_s:
            what = conn.incomplete()
            kind = "slow_headers" if what == "headers" else "slow_frame"
            self.abused(kind, f"a {what or 'frame'} incomplete for {limits.frame_timeout_s} s")
            self.close(F.ENHANCE_YOUR_CALM, f"{what or 'frame'} not completed in time")
            return
        if self.held > limits.max_buffered:
            self._unread(now)
        else:
            self.taken_seen = -1
        if self.calls or conn.last_peer_stream != self.seen_stream:
            self.seen_stream = conn.last_peer_stream
            self.idle_since = now
        elif now - self.idle_since >= limits.idle_timeout_s:
            self.abused("idle_timeout", f"no call for {limits.idle_timeout_s} s")
            self.close(F.NO_ERROR, "idle connection closed")

    def pause_writing(self) -> None:
        self.write_paused = True  # answer DATA is held by the calls meanwhile

    def resume_writing(self) -> None:
        self.write_paused = False
        for call in list(self.blocked):
            guard(call, call.flush_down)
        self.flush()

    def hold(self, size: int) -> None:
        """Answer bytes a call holds for the caller (call.py's _hold)."""
        self.held += size

    def release(self, size: int, taken: bool) -> None:
        """Held bytes gone: `taken` by the caller, or dropped with their stream."""
        self.held -= size
        if taken:
            self.taken += size

    def _unread(self, now: float) -> None:
        """Answers held over `max_buffered_bytes` (CVE-2019-9517: a window the caller
        does not open, a socket it does not read) and none of them taken for
        `frame_timeout_s`: the streams that hold them are reset (RST_STREAM(CANCEL) to
        the caller, their upstream streams cancelled), as Envoy's stream idle timeout
        resets a stuck stream. Streams, not the connection: a hop further in, this
        connection is another sidecar's pooled one, whose other callers' calls go on.
        A slow reader that takes some is kept (each of its streams held to the window we
        give the endpoint meanwhile)."""
        if self.taken != self.taken_seen:
            self.taken_seen = self.taken
            self.stalled_since = now
            return
        if now - self.stalled_since < self.limits.frame_timeout_s:
            return
        stuck = [(sid, call) for sid, call in self.calls.items() if call.down_pending]
        self.abused("unread_data", f"{self.held} bytes of answers held, none taken")
        for sid, call in stuck:
            self.conn.reset(sid, F.CANCEL)
            guard(call, call.on_reset, F.CANCEL)
        self.taken_seen = -1
        self.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.plane.connections.discard(self)
        self.plane.lingering.discard(self)
        self._cancel_calls()

    def write_now(self) -> None:
        out = self.conn.out
        if out and self.transport is not None and not self.shut:
            self.transport.write(b"".join(out))
        out.clear()

    # H2Connection handler
    def on_headers(self, stream_id: int, block: Block, end_stream: bool) -> None:
        call = self.calls.get(stream_id)
        if call is not None:  # trailers from a caller: gRPC sends none; end the request
            if end_stream:
                guard(call, call.on_data, b"", True, 0)
            return
        prepared = block.prepared
        plane = self.plane
        # a block cached before a config reload changed the routes is resolved again
        if not isinstance(prepared, Prepared) or prepared.generation != plane.generation:
            prepared = _prepare(block, plane.resolve, plane.generation)
        call = plane.new_call(plane, self, stream_id, prepared)
        self.calls[stream_id] = call
        self.idle_since = call.started  # for max_connections: the longest idle goes first
        if end_stream:
            call.req_ended = True
        try:  # (each call's step guarded as `guard` does, inline on the per-request path)
            call.start()
        except Exception:
            call.crashed()

    def on_oversized(self, stream_id: int) -> None:
        self.abused("header_too_large", "a request's header list over max_header_list_size")
        self.conn.send_headers(
            stream_id,
            _trailers("RESOURCE_EXHAUSTED", "request headers over the size limit", "headers"),
            True,
        )
        self.conn.reset(stream_id, F.NO_ERROR)

    def on_data(self, stream_id: int, data: bytes, end_stream: bool, flow: int) -> None:
        call = self.calls.get(stream_id)
        if call is None or not (data or end_stream):
            # an empty DATA frame (padding at most) carries nothing to relay: not sent on,
            # so that it does not pin the call's upstream HEADERS (H2Connection._withdraw)
            self.conn.consumed(stream_id, flow)
            return
        try:
            call.on_data(data, end_stream, flow)
        except Exception:
            call.crashed()

    def on_reset(self, stream_id: int, code: int) -> None:
        kind = self.conn.stream_abuse
        if kind:  # we reset the stream for abuse (connection.py): counted, not premature
            self.abused(kind, f"stream {stream_id} reset")
            call = self.calls.get(stream_id)
            if call is not None:
                guard(call, call.on_reset, code)
            return
        call = self.calls.get(stream_id)
        if call is not None:
            early = self.plane.clock() - call.started < self.limits.premature_reset_lifetime_s
            guard(call, call.on_reset, code)
            if early:
                self._premature_reset()

    def _premature_reset(self) -> None:
        """Rapid Reset (CVE-2023-44487), as Envoy 1.27.1 bounds it: a stream the caller
        resets before its call ended and within `premature_reset_min_stream_lifetime_s`
        is premature; once the connection opened `premature_reset_total_stream_count`
        streams, at most half of them may be, and before that at most half that count.
        Each reset's own work is bounded by the call: one still in admission or waiting
        for a stream slot never reaches the upstream, one already sent is reset there
        with RST_STREAM(CANCEL)."""
        self.premature += 1
        limit = self.limits.premature_reset_streams
        opened = self.conn.opened
        if self.premature * 2 >= (limit if opened < limit else opened) and not self.closing:
            raise F.ProtocolError(
                F.ENHANCE_YOUR_CALM,
                f"{self.premature} of {opened} streams reset by the caller early",
                "rapid_reset",
            )

    def on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            for call in list(self.blocked):
                guard(call, call.flush_down)
        else:
            found = self.calls.get(stream_id)
            if found is not None and found.down_pending:
                guard(found, found.flush_down)

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        return None  # the caller stops opening streams; ours finish


class _CountingConnection(H2Connection):
    """A caller's connection that counts the DATA bytes sent on each stream."""

    def __init__(self, handler: Any, settings: Settings) -> None:
        super().__init__(handler, client=False, settings=settings)
        self.sent: dict[int, int] = {}  # stream id -> bytes; popped when the call is logged

    def send_data(self, sid: int, data: bytes | memoryview, end_stream: bool) -> int:
        n = H2Connection.send_data(self, sid, data, end_stream)
        sent = self.sent
        sent[sid] = sent.get(sid, 0) + n
        return n


class LoggedDownstream(Downstream):
    """A caller's connection to a listener that writes an access log: it also keeps the
    caller's address and the bytes each stream carried (sidecar/access_log.py reads and
    pops them when the call ends). Chosen per listener, so one without a log does none of it."""

    def __init__(self, plane: Plane) -> None:
        super().__init__(plane)
        self.conn = _CountingConnection(self, plane.settings)
        self.peer = ""
        self.bytes_in: dict[int, int] = {}  # stream id -> request DATA bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        Downstream.connection_made(self, transport)

    def on_data(self, stream_id: int, data: bytes, end_stream: bool, flow: int) -> None:
        if stream_id in self.calls:  # not after the call ended: it is no longer popped
            counts = self.bytes_in
            counts[stream_id] = counts.get(stream_id, 0) + len(data)
        Downstream.on_data(self, stream_id, data, end_stream, flow)


def _abort(transport: asyncio.Transport) -> None:
    """The end of a lingering close (Downstream.close)."""
    try:
        if not transport.is_closing() or transport.get_write_buffer_size():
            transport.abort()
    except Exception:  # already gone
        return


def _prepare(block: Block, resolve: Callable[[str, str | None], Any], generation: int) -> Prepared:
    """What the relay needs from a request block: cached on the block, or for a split
    block (a sidecar's per-call tail after a cached head) derived from the head's; a
    cached head from an earlier routing `generation` is prepared again."""
    base = block.base
    if base is not None:
        head = base.prepared
        if not isinstance(head, Prepared) or head.generation != generation:
            head = base.prepared = prepare(base.headers, resolve, generation)
        found = prepare_split(head, block.extra, resolve)
        if found is not None:
            return found
    prepared = block.prepared = prepare(block.headers, resolve, generation)
    return prepared


def _trailers(status: str, message: str, reason: str) -> bytes:
    from sidecar.h2relay.grpcwire import trailers_only

    return trailers_only(status, message, reason)
