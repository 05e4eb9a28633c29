"""A fake gRPC upstream: HTTP/2 server connections that answer each stream as scripted.

Does I/O only on the transports its connections are given (the in-memory pair of a
fake clock's network, sidecar/testing/clock.py). `FakeUpstream(*steps)` answers the
n-th stream it is opened, on any of its connections and at any address it is served
at, with `steps[n]`: so a script reads attempt by attempt (the first attempt gets
`Reply("UNAVAILABLE")`, the retry `Reply()`). What each stream carried is kept in
`streams` (`SeenStream`: address, headers, request body, END_STREAM, the RST_STREAM
the sidecar sent, each with the fake time it happened), for tests to assert on.

The steps, each acting when the request is whole (END_STREAM; `on="headers"`: as soon
as the request headers came), after `delay_s` on the loop's (fake) clock:
- `Reply(status, messages, ...)`: response headers, the messages, trailers; an error
  with no messages goes trailers-only, as gRPC servers answer one; `finish=False`
  sends headers and messages and then nothing more (a stream that stalls mid-answer);
- `Reset(code)`: RST_STREAM(code);
- `GoAway(code)`: GOAWAY whose last stream id is the one before this stream, which
  the peer thus never processed (RFC 9113 §6.8);
- `Hang()`: nothing at all (the caller's deadline or per-try timeout must end it).
A stream past the end of the script is answered INTERNAL ("no step") and counted.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

from sidecar.h2relay import frames as F
from sidecar.h2relay.connection import H2Connection, Settings
from sidecar.h2relay.grpcwire import STATUS_CODES, percent_encode
from sidecar.h2relay.hpack_codec import Block, encode_field
from sidecar.outcome import SIDECAR_ERROR_KEY
from sidecar.testing.clock import FakeNetwork

Pairs = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Reply:
    """Answer the stream: `status` (a gRPC status name) with `message`, after
    `messages` (each framed as one gRPC message); extra `headers` and `trailers`;
    `sidecar_error` adds `x-sidecar-error` (a peer sidecar's own error)."""

    status: str = "OK"
    messages: Sequence[bytes] | None = None  # None: one empty message if OK, else none
    message: str = ""
    headers: Pairs = ()
    trailers: Pairs = ()
    sidecar_error: str | None = None
    trailers_only: bool | None = None  # None: when there are no messages and not OK
    finish: bool = True  # False: no trailers (the answer stalls after its messages)
    delay_s: float = 0.0
    on: str = "end"

    def __post_init__(self) -> None:
        if self.status not in STATUS_CODES:
            raise ValueError(f"{self.status!r} is not a gRPC status name")
        _check_on(self.on)


@dataclass(frozen=True)
class Reset:
    """RST_STREAM(code) on the stream (sidecar/h2relay/frames.py has the codes)."""

    code: int = F.INTERNAL_ERROR
    delay_s: float = 0.0
    on: str = "end"

    def __post_init__(self) -> None:
        _check_on(self.on)


@dataclass(frozen=True)
class GoAway:
    """GOAWAY(code) naming the stream before this one as the last processed."""

    code: int = F.NO_ERROR
    delay_s: float = 0.0
    on: str = "headers"

    def __post_init__(self) -> None:
        _check_on(self.on)


@dataclass(frozen=True)
class Hang:
    """Never answer."""

    delay_s: float = 0.0
    on: str = "end"


Step = Reply | Reset | GoAway | Hang


def _check_on(on: str) -> None:
    if on not in ("end", "headers"):
        raise ValueError(f"on={on!r}: a step acts on 'end' (the request is whole) or 'headers'")


@dataclass(eq=False)
class SeenStream:
    """One stream as the fake upstream saw it; times are the loop's (fake) clock."""

    number: int  # 1 for the first stream the upstream was opened
    address: str  # where it came (host:port the caller connected to)
    sid: int
    headers: dict[str, str]
    step: Step
    opened_at: float
    body: bytearray = field(default_factory=bytearray)
    ended_at: float | None = None  # the request's END_STREAM came
    reset: int | None = None  # RST_STREAM code the caller sent, if it did
    reset_at: float | None = None
    answered_at: float | None = None  # when the step acted

    @property
    def method(self) -> str:
        return self.headers.get(":path", "")

    @property
    def timeout(self) -> str | None:
        """The `grpc-timeout` the stream carried, as sent (e.g. "99m")."""
        return self.headers.get("grpc-timeout")

    def messages(self) -> list[bytes]:
        """The request's gRPC messages, unframed."""
        out: list[bytes] = []
        body = bytes(self.body)
        pos = 0
        while pos + 5 <= len(body):
            length = int.from_bytes(body[pos + 1 : pos + 5], "big")
            out.append(body[pos + 5 : pos + 5 + length])
            pos += 5 + length
        return out


class FakeUpstream:
    """The server side of every connection made to where it is served (see module)."""

    def __init__(self, *script: Step, settings: Settings | None = None) -> None:
        self.script = list(script)
        self.settings = settings or Settings()
        self.streams: list[SeenStream] = []
        self.unscripted = 0  # streams past the end of the script
        self.connections: list[_ServedConnection] = []

    def serve(self, network: FakeNetwork, *addresses: str) -> FakeUpstream:
        """Serve at `addresses` on a fake clock's network (FakeClock.network)."""
        for address in addresses:
            network.serve(address, functools.partial(self.protocol, address))
        return self

    def protocol(self, address: str) -> _ServedConnection:
        conn = _ServedConnection(self, address)
        self.connections.append(conn)
        return conn

    def _next_step(self) -> Step:
        n = len(self.streams)
        if n < len(self.script):
            return self.script[n]
        self.unscripted += 1
        return Reply("INTERNAL", message=f"fake upstream: no step for stream {n + 1}")

    def __repr__(self) -> str:
        return f"FakeUpstream({len(self.streams)} streams, {len(self.script)} steps)"


class _ServedConnection(asyncio.Protocol):
    """One HTTP/2 server connection of a FakeUpstream (an H2Connection handler)."""

    def __init__(self, upstream: FakeUpstream, address: str) -> None:
        self.upstream = upstream
        self.address = address
        self.loop = asyncio.get_running_loop()
        self.conn = H2Connection(self, client=False, settings=upstream.settings)
        self.transport: asyncio.Transport | None = None
        self.by_sid: dict[int, SeenStream] = {}
        self.pending: dict[int, list[tuple[bytes, bool, bool]]] = {}  # held by the window
        self.lost = False

    # ---- asyncio protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.conn.receive(data)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.transport = None

    def flush(self) -> None:
        out = self.conn.take()
        if out and self.transport is not None:
            self.transport.write(out)

    # ---- H2Connection handler -----------------------------------------------------

    def on_headers(self, stream_id: int, block: Block, end_stream: bool) -> None:
        seen = self.by_sid.get(stream_id)
        if seen is not None:  # trailers from the caller: gRPC sends none; the request ends
            if end_stream:
                self._ended(seen)
            return
        upstream = self.upstream
        step = upstream._next_step()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in block.headers}
        seen = SeenStream(
            len(upstream.streams) + 1, self.address, stream_id, headers, step, self.loop.time()
        )
        upstream.streams.append(seen)
        self.by_sid[stream_id] = seen
        if step.on == "headers":
            self._due(seen)
        if end_stream:
            self._ended(seen)

    def on_data(self, stream_id: int, data: bytes, end_stream: bool, flow: int) -> None:
        self.conn.consumed(stream_id, flow)
        seen = self.by_sid.get(stream_id)
        if seen is None:
            return
        seen.body += data
        if end_stream:
            self._ended(seen)

    def on_reset(self, stream_id: int, code: int) -> None:
        seen = self.by_sid.get(stream_id)
        if seen is not None and seen.reset is None:
            seen.reset = code
            seen.reset_at = self.loop.time()
        self.pending.pop(stream_id, None)

    def on_oversized(self, stream_id: int) -> None:
        self.conn.reset(stream_id, F.REFUSED_STREAM)

    def on_window(self, stream_id: int) -> None:
        for sid in list(self.pending):
            self._send_pending(sid)
        self.flush()

    def on_goaway(self, last_stream_id: int, code: int) -> None:
        return None

    # ---- acting out the script ----------------------------------------------------

    def _ended(self, seen: SeenStream) -> None:
        if seen.ended_at is None:
            seen.ended_at = self.loop.time()
            if seen.step.on == "end":
                self._due(seen)

    def _due(self, seen: SeenStream) -> None:
        delay = seen.step.delay_s
        if delay > 0:
            self.loop.call_later(delay, self._act, seen)
        else:
            self._act(seen)

    def _act(self, seen: SeenStream) -> None:
        if seen.reset is not None or self.lost:
            return  # the caller gave up first (its RST_STREAM is recorded)
        step = seen.step
        if isinstance(step, Hang):
            return
        seen.answered_at = self.loop.time()
        conn = self.conn
        sid = seen.sid
        if isinstance(step, Reset):
            conn.reset(sid, step.code)
        elif isinstance(step, GoAway):
            last = max(0, sid - 2)
            conn.out.append(F.goaway(last, step.code, b"fake upstream going away"))
        else:
            self._reply(sid, step)
        self.flush()

    def _reply(self, sid: int, step: Reply) -> None:
        messages = step.messages
        if messages is None:
            messages = (b"",) if step.status == "OK" else ()
        trailers_only = step.trailers_only
        if trailers_only is None:
            trailers_only = not messages and step.status != "OK"
        status = [
            encode_field(b"grpc-status", str(STATUS_CODES[step.status]).encode()),
            encode_field(b"grpc-message", percent_encode(step.message)),
        ]
        if step.sidecar_error is not None:
            status.append(encode_field(SIDECAR_ERROR_KEY.encode(), step.sidecar_error.encode()))
        status += [encode_field(k.encode(), v.encode()) for k, v in step.trailers]
        head = encode_field(b":status", b"200") + encode_field(b"content-type", b"application/grpc")
        head += b"".join(encode_field(k.encode(), v.encode()) for k, v in step.headers)
        if trailers_only:
            self.conn.send_headers(sid, head + b"".join(status), True)
            return
        queue: list[tuple[bytes, bool, bool]] = [(head, False, True)]
        queue += [(b"\0" + len(m).to_bytes(4, "big") + m, False, False) for m in messages]
        if step.finish:
            queue.append((b"".join(status), True, True))
        self.pending[sid] = queue
        self._send_pending(sid)

    def _send_pending(self, sid: int) -> None:
        """Headers, DATA and trailers in order, DATA as far as the windows allow."""
        queue = self.pending.get(sid)
        conn = self.conn
        while queue:
            data, end_stream, is_headers = queue[0]
            if is_headers:
                conn.send_headers(sid, data, end_stream)
            else:
                sent = conn.send_data(sid, data, end_stream)
                if sent < len(data):
                    queue[0] = (data[sent:], end_stream, False)
                    return
            queue.pop(0)
        self.pending.pop(sid, None)
