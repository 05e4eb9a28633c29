"""One gRPC call made by the sidecar as a client, any of the four kinds, on one relay
connection (`UpstreamConnection`, sidecar/h2relay/pool.py).

Does I/O only by queueing frames on the connection's sans-IO `H2Connection` (the
`UpstreamConnection` protocol writes them out) and by resolving asyncio futures. A `ClientStream`
is a `pool.UpstreamStream`, driven by its connection exactly as a relayed `Call` is. Two users:
the in-process client (sidecar/client), whose calls go over an in-memory connection to
an outbound relay listener, and the active health checks (sidecar/health/checker.py),
which send `Health/Check` over the pool's own connection to each endpoint.

gRPC over HTTP/2 (gRPC's PROTOCOL-HTTP2.md), as a client:
- request: POST to the method's path, `te: trailers`, `content-type: application/grpc`,
  the metadata (`-bin` values in base64) and then `grpc-timeout` (last, so the peer's
  HPACK decoder caches the rest of the block: hpack_codec.Decoder's split blocks);
  length-prefixed uncompressed messages, sent as the stream's and connection's
  flow-control windows allow (a writer waits once `SEND_HIGH_WATER` bytes are held);
- answer: headers, DATA (length-prefixed messages, each at most `limit` bytes),
  trailers with `grpc-status` and a percent-encoded `grpc-message`; or a trailers-only
  answer, whose metadata is the call's trailing metadata; an HTTP status other than 200
  without a `grpc-status` is mapped as the spec says, an RST_STREAM code likewise;
- received bytes are credited back to the peer as they arrive while fewer than
  `READ_HIGH_WATER` bytes of whole messages wait for the reader, and only as the reader
  takes them beyond that: a slow reader stalls the writer, not memory;
- `cancel()`: RST_STREAM(CANCEL).
Errors the stream makes itself (before sending, or on a broken answer) carry
`x-sidecar-error` like every error the sidecar makes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any

from sidecar import __version__
from sidecar.h2relay import frames as F
from sidecar.h2relay.grpcwire import STATUS_BY_WIRE, STATUS_FOR_RST, encode_timeout
from sidecar.h2relay.hpack_codec import Block, encode_field, encode_literal
from sidecar.metadata import Pairs, forwardable
from sidecar.outcome import SIDECAR_ERROR_KEY

if TYPE_CHECKING:
    from sidecar.h2relay.pool import UpstreamConnection

# an HTTP status without a grpc-status (a proxy or a web server answered): the spec's map
_FOR_HTTP = {
    400: "INTERNAL",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "UNIMPLEMENTED",
    429: "UNAVAILABLE",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "UNAVAILABLE",
}
_KEY = re.compile(r"[0-9a-z_.\-]+")
_USER_AGENT = f"sidecar-client/{__version__}".encode()
_TIMEOUT = b"grpc-timeout"
SEND_HIGH_WATER = 256 * 1024  # request bytes held back by the windows before write() waits
READ_HIGH_WATER = 1024 * 1024  # whole unread messages before the peer's credit is held back


class Answer:
    """How a call ended: status (a gRPC status name), details, metadata both ways
    (reserved keys dropped, `-bin` values decoded, as grpcio shows them) and, for a
    unary-response call that succeeded, its one response message."""

    __slots__ = ("code", "details", "headers", "response", "trailers")

    def __init__(
        self,
        code: str,
        details: str,
        headers: Pairs,
        trailers: Pairs,
        response: bytes | None = None,
    ) -> None:
        self.code = code
        self.details = details
        self.headers = headers
        self.trailers = trailers
        self.response = response

    def __repr__(self) -> str:
        return f"<Answer {self.code} {self.details!r}>"


def local_answer(code: str, details: str, reason: str, headers: Pairs = ()) -> Answer:
    """An error this process made (not the peer): it carries `x-sidecar-error`."""
    return Answer(code, details, headers, ((SIDECAR_ERROR_KEY, reason),))


def request_head(path: str, authority: str) -> bytes:
    """The encoded fields every call of one method sends (cache it per method)."""
    fields = (
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", authority.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"user-agent", _USER_AGENT),
    )
    return b"".join(encode_field(name, value) for name, value in fields)


def request_block(head: bytes, metadata: Pairs, timeout_s: float | None) -> bytes:
    """A call's whole header block; ValueError names metadata no peer would accept."""
    block = head + encode_metadata(metadata) if metadata else head
    if timeout_s is not None:
        block += encode_literal(_TIMEOUT, encode_timeout(max(timeout_s, 0.000001)))
    return block


def encode_metadata(metadata: Pairs) -> bytes:
    out = []
    for key, value in metadata:
        if not _KEY.fullmatch(key):
            raise ValueError(f"key {key!r}: lower-case letters, digits, '-', '_' and '.' only")
        if key.endswith("-bin"):
            raw = value if isinstance(value, bytes) else str(value).encode()
            data = base64.b64encode(raw).rstrip(b"=")
        elif isinstance(value, str) and value.isascii() and value.isprintable():
            data = value.encode()
        else:
            raise ValueError(f"value of {key!r}: printable ASCII text (or name the key -bin)")
        out.append(encode_literal(key.encode(), data))
    return b"".join(out)


def frame(message: bytes) -> bytes:
    """One length-prefixed, uncompressed gRPC message."""
    return b"\0" + len(message).to_bytes(4, "big") + message


class ClientStream:
    """One call's stream. Made with its header block; `start(up)` opens it on a
    connection (or queues it there until the connection is ready or has a free slot);
    `send`/`end_request` write the request; `take` reads the response's messages;
    `ended` resolves with the `Answer` once the call is over, whichever way."""

    __slots__ = (
        "block",
        "buffered",
        "cache_reads",
        "down",
        "ended",
        "got_headers",
        "headers",
        "held_flow",
        "limit",
        "loop",
        "messages",
        "partial",
        "readable",
        "req_ended",
        "sid",
        "unary",
        "up",
        "up_pending",
        "writable",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        block: bytes,
        limit: int,
        *,
        unary: bool = False,
        cache_reads: bool = True,
    ) -> None:
        self.loop = loop
        self.block = block
        self.limit = limit  # largest response message taken
        self.unary = unary  # one response message, delivered with the answer
        # cache what a response block says on the block itself: only on a connection no
        # relayed call shares (a relayed call caches its own reading there)
        self.cache_reads = cache_reads
        self.up: UpstreamConnection | None = None
        self.sid = 0
        self.up_pending: list[memoryview] = []  # request bytes the windows held back
        self.req_ended = False  # the request's END_STREAM is sent or queued
        self.headers: Pairs | None = None  # response headers, once they came
        self.got_headers: asyncio.Future[None] | None = None  # someone waits for them
        self.messages: deque[bytes] = deque()  # whole response messages not taken yet
        self.buffered = 0  # their bytes
        self.held_flow = 0  # received bytes not credited back yet (the reader is slow)
        self.partial = bytearray()  # a response message split across DATA frames
        self.readable: asyncio.Future[None] | None = None  # a reader waits
        self.writable: asyncio.Future[None] | None = None  # a writer waits for window
        self.ended: asyncio.Future[Answer] = loop.create_future()
        self.down = self  # an Upstream kicks a queued stream's caller once it opened

    def kick(self) -> None:
        return None  # no caller's connection to flush: the caller awaits futures

    # ---- sending ---------------------------------------------------------------------

    def start(self, up: UpstreamConnection) -> None:
        """Open on `up` now, or wait in its queue (connecting, or no stream slot)."""
        self.up = up
        if up.ready and up.has_slot():
            self.open_upstream(up)
        else:
            up.waiting.append(self)

    def open_upstream(self, up: UpstreamConnection) -> None:
        self.up = up
        conn = up.conn
        sid = self.sid = conn.open_stream()
        up.calls[sid] = self
        pending = self.up_pending
        conn.send_headers(sid, self.block, self.req_ended and not pending)
        if pending:
            self.up_pending = []
            for i, chunk in enumerate(pending):
                if self.up_pending:
                    self.up_pending.append(chunk)
                else:
                    self._send(chunk, self.req_ended and i == len(pending) - 1)
            self._wake_writer()  # a writer may have waited for the stream to open
        up.kick()  # one write per connection per loop turn for all calls started in it

    def send(self, data: bytes, end: bool = False) -> bool:
        """Queue request bytes (framed messages); True while the caller may write more
        at once, False once `SEND_HIGH_WATER` bytes wait for the peer's window (then
        await `wait_writable()`). Ignored once the call is over."""
        if self.ended.done() or self.req_ended:
            return True
        if end:
            self.req_ended = True
        up = self.up
        if up is None or not self.sid:  # not open yet: sent by open_upstream
            if data:  # (END_STREAM goes with the last chunk, or with the headers)
                self.up_pending.append(memoryview(data))
            return self._room()
        if self.up_pending:
            if data:
                self.up_pending.append(memoryview(data))
            return self._room()
        self._send(memoryview(data), end)
        up.kick()
        return self._room()

    def end_request(self) -> None:
        """Half-close: the request is complete (done_writing)."""
        self.send(b"", True)

    def _send(self, data: memoryview, end: bool) -> None:
        up = self.up
        assert up is not None
        sent = up.conn.send_data(self.sid, data, end)
        if sent < len(data):
            self.up_pending.append(data[sent:])
            up.blocked.add(self)

    def _room(self) -> bool:
        return sum(len(c) for c in self.up_pending) < SEND_HIGH_WATER

    def wait_writable(self) -> asyncio.Future[None]:
        """Resolves once the held-back request bytes fell under the high-water mark (or
        the call ended)."""
        waiter = self.writable
        if waiter is None or waiter.done():
            waiter = self.writable = self.loop.create_future()
        if self._room() or self.ended.done():
            waiter.set_result(None)
        return waiter

    def flush_up(self) -> None:
        """The stream's send window grew: send what it held back."""
        up = self.up
        if up is None or not self.sid:
            return
        pending = self.up_pending
        while pending:
            chunk = pending[0]
            last = len(pending) == 1
            sent = up.conn.send_data(self.sid, chunk, self.req_ended and last)
            if sent < len(chunk):
                pending[0] = chunk[sent:]
                break
            pending.pop(0)
        if not pending:
            up.blocked.discard(self)
        up.kick()
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter = self.writable
        if waiter is not None and not waiter.done() and (self._room() or self.ended.done()):
            waiter.set_result(None)

    # ---- receiving (events from the connection) --------------------------------------

    def on_up_headers(self, block: Block, end_stream: bool) -> None:
        if self.ended.done():
            return
        read = _read(block, self.cache_reads)
        if not end_stream:
            if self.headers is not None:
                self._fail("INTERNAL", "a second header block before the trailers", "bad_answer")
            elif read.http != 200:  # no gRPC server: stop its stream, answer by the status
                self._fail(_FOR_HTTP.get(read.http, "UNKNOWN"),
                           f"Received http2 header with status: {read.http}",
                           "bad_answer")  # fmt: skip
            else:
                self.headers = read.metadata
                waiter = self.got_headers
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            return
        # the trailers; without headers before them a trailers-only answer, whose
        # metadata is the call's trailing metadata
        headers = self.headers or ()
        if read.code is None:
            if self.headers is None and read.http != 200:
                self._end(Answer(_FOR_HTTP.get(read.http, "UNKNOWN"),
                                 f"Received http2 header with status: {read.http}", (), ()))  # fmt: skip
            else:
                self._end(local_answer("UNKNOWN", "missing grpc-status", "bad_answer", headers))
            return
        if self.partial:
            self._end(local_answer("INTERNAL", "the answer ended inside a message",
                                   "bad_answer", headers))  # fmt: skip
            return
        response = None
        if self.unary and read.code == "OK":
            if len(self.messages) != 1:
                self._end(local_answer("INTERNAL",
                                       f"the peer answered OK with {len(self.messages)} "
                                       f"messages where one was due", "bad_answer", headers))  # fmt: skip
                return
            response = self.messages.popleft()
            self.buffered = 0
        self._end(Answer(read.code, read.details, headers, read.metadata, response))

    def on_up_data(self, data: bytes, end_stream: bool, flow: int) -> None:
        up = self.up
        if up is None:
            return
        if self.ended.done():
            up.conn.consumed(self.sid, flow)
            return
        if data and not self._messages(data):
            up.conn.consumed(self.sid, flow)
            return
        if self.unary or self.buffered < READ_HIGH_WATER:
            up.conn.consumed(self.sid, flow)
        else:
            self.held_flow += flow  # credited as the reader takes messages (take)
        if end_stream:
            self._end(local_answer("INTERNAL", "the peer ended the stream without trailers",
                                   "bad_answer", self.headers or ()))  # fmt: skip
            return
        waiter = self.readable
        if waiter is not None and self.messages and not waiter.done():
            waiter.set_result(None)

    def _messages(self, data: bytes) -> bool:
        """Cut `data` into whole messages; False (and the call failed) on a bad one."""
        partial = self.partial
        if not partial and len(data) >= 5 and data[0] == 0:
            length = int.from_bytes(data[1:5], "big")
            if length == len(data) - 5 and length <= self.limit:  # one whole message
                self.messages.append(data[5:])
                self.buffered += length
                return True
        partial += data
        while len(partial) >= 5:
            length = int.from_bytes(partial[1:5], "big")
            if length > self.limit:
                self._fail("RESOURCE_EXHAUSTED",
                           f"response message over max_message_bytes ({self.limit})",
                           "message_too_large")  # fmt: skip
                return False
            if partial[0] != 0:
                self._fail("INTERNAL", "a compressed response message (none was asked for)",
                           "bad_answer")  # fmt: skip
                return False
            if len(partial) < 5 + length:
                break
            self.messages.append(bytes(partial[5 : 5 + length]))
            self.buffered += length
            del partial[: 5 + length]
        return True

    def on_up_reset(self, code: int) -> None:
        if code == F.REFUSED_STREAM and self.headers is None:
            self.on_up_refused()
            return
        self._forget()
        self._end(Answer(STATUS_FOR_RST.get(code, "INTERNAL"),
                         f"Received RST_STREAM with error code {code}", self.headers or (), ()))  # fmt: skip

    def on_up_lost(self, why: str, connect: bool) -> None:
        self.up = None  # the connection is gone: nothing to reset
        if connect:
            self._end(local_answer("UNAVAILABLE", f"could not connect: {why}", "connect_failed"))
        else:
            self._end(local_answer("UNAVAILABLE", f"connection lost: {why}", "connection_lost",
                                   self.headers or ()))  # fmt: skip

    def on_up_refused(self) -> None:
        """The peer said it never processed the stream (GOAWAY, REFUSED_STREAM)."""
        self._forget()
        self._end(local_answer("UNAVAILABLE", "the peer refused the stream unprocessed",
                               "connection_lost"))  # fmt: skip

    def crashed(self) -> None:
        """One of our handlers raised: end this call, not the connection."""
        self._fail("INTERNAL", "the sidecar failed reading the answer", "internal")

    # ---- the reader's side -----------------------------------------------------------

    def take(self) -> bytes | None:
        """The next whole response message, or None when none is waiting."""
        if not self.messages:
            return None
        message = self.messages.popleft()
        self.buffered -= len(message)
        if self.held_flow and self.buffered < READ_HIGH_WATER:
            flow, self.held_flow = self.held_flow, 0
            up = self.up
            if up is not None and self.sid:
                up.conn.consumed(self.sid, flow)
                up.kick()
        return message

    def wait_readable(self) -> asyncio.Future[None]:
        """Resolves once a message waits or the call ended."""
        waiter = self.readable
        if waiter is None or waiter.done():
            waiter = self.readable = self.loop.create_future()
        if self.messages or self.ended.done():
            waiter.set_result(None)
        return waiter

    def wait_headers(self) -> asyncio.Future[None]:
        """Resolves once the response headers came (or the call ended without them)."""
        waiter = self.got_headers
        if waiter is None:
            waiter = self.got_headers = self.loop.create_future()
            if self.headers is not None or self.ended.done():
                waiter.set_result(None)
        return waiter

    # ---- ending ----------------------------------------------------------------------

    def cancel(self, details: str = "Locally cancelled by application!") -> None:
        """The caller gave up: the peer hears RST_STREAM(CANCEL)."""
        self._detach(reset=True)
        self._end(Answer("CANCELLED", details, self.headers or (), ()))

    def fail(self, code: str, details: str, reason: str) -> None:
        """End the call with an error of ours; the peer hears RST_STREAM(CANCEL)."""
        self._fail(code, details, reason)

    def _fail(self, code: str, details: str, reason: str) -> None:
        self._detach(reset=True)
        self._end(local_answer(code, details, reason, self.headers or ()))

    def _end(self, answer: Answer) -> None:
        # the answer is whole; a request still being sent is cut (the peer is done)
        self._detach(reset=bool(self.up_pending) or not self.req_ended)
        ended = self.ended
        if not ended.done():
            ended.set_result(answer)
        for waiter in (self.readable, self.writable, self.got_headers):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _forget(self) -> None:
        """The peer ended the stream itself (reset, GOAWAY): nothing to send it."""
        up = self.up
        self.up = None
        if up is not None:
            up.leave(self, self.sid, reset=False)
        self.up_pending = []

    def _detach(self, reset: bool) -> None:
        up = self.up
        if up is None:
            return
        self.up = None
        up.leave(self, self.sid, reset)
        if self.sid and reset:
            up.kick()
        self.up_pending = []


class _Read:
    """What a response header block says, read once per distinct block (a connection's
    decoder hands back the same Block for the same bytes)."""

    __slots__ = ("code", "details", "http", "metadata")

    def __init__(self, http: int, code: str | None, details: str, metadata: Pairs) -> None:
        self.http = http  # :status, 0 when missing or not a number
        self.code = code  # grpc-status name, None when absent
        self.details = details  # grpc-message, percent-decoded
        self.metadata = metadata  # as grpcio shows it: reserved keys dropped, -bin decoded


def _read(block: Block, cache: bool) -> _Read:
    found = block.prepared
    if isinstance(found, _Read):
        return found
    http = 0
    code = None
    details = ""
    pairs: list[tuple[str, Any]] = []
    for raw_key, raw in block.headers:
        if raw_key == b":status":
            http = int(raw) if raw.isdigit() else 0
        elif raw_key == b"grpc-status":
            code = STATUS_BY_WIRE.get(raw, "UNKNOWN")
        elif raw_key == b"grpc-message":
            details = urllib.parse.unquote(raw.decode("latin-1"))
        key = raw_key.decode("latin-1")
        if key.endswith("-bin"):
            try:
                pairs.append((key, base64.b64decode(raw + b"=" * (-len(raw) % 4))))
            except (binascii.Error, ValueError):
                continue  # undecodable binary metadata is dropped, as grpcio does
        else:
            pairs.append((key, raw.decode("latin-1")))
    read = _Read(http, code, details, forwardable(pairs))
    if cache and found is None:
        block.prepared = read
    return read
