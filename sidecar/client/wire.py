"""Unary attempts over the relay's own HTTP/2 client connections (sidecar/h2relay).

Does I/O: sockets through h2relay's connection `Pool`, timers through its `Wheel`.
grpcio's asyncio client spends ~110 µs of CPU per unary call on these machines, the
relay's sans-IO connection code about 40 (bench/README.md, zero-hop runs). So the
in-process client sends unary calls this way, one `Wire` per endpoint, and streaming
calls over the pooled grpcio channels (sidecar/proxy/forward.py). The pipeline cannot
tell them apart: a `Wire` answers an attempt with the `Answer` grpcio's call would have
given, down to the wording of the local failures `sidecar.proxy.headers.local_reason`
reads (connect failure, lost connection, deadline, oversized message).

gRPC over HTTP/2 (gRPC's PROTOCOL-HTTP2.md), as a client:
- request: POST to the method's path, `te: trailers`, `content-type: application/grpc`,
  `grpc-timeout` from the attempt's timeout, the metadata (`-bin` values in base64), one
  length-prefixed uncompressed message, sent as the peer's flow-control windows allow;
- answer: headers, DATA (exactly one length-prefixed message for a unary call, at most
  `max_message_bytes`), trailers with `grpc-status` and a percent-encoded
  `grpc-message`; or a trailers-only answer; an HTTP status other than 200 without a
  `grpc-status` is mapped as the spec says, an RST_STREAM code as grpcio maps it;
- the attempt's timeout or the caller's cancel: RST_STREAM(CANCEL).
While its endpoint's connection is being made (or has no stream slot free), an attempt
waits in the connection's queue holding one of the upstream's `limits.max_pending`
slots, as a grpcio attempt waits for its channel to connect.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import grpc

from sidecar import __version__
from sidecar.endpoint import Endpoint, parse_hostport
from sidecar.h2relay import frames as F
from sidecar.h2relay.grpcwire import STATUS_BY_WIRE, STATUS_FOR_RST, MessageLimit, encode_timeout
from sidecar.h2relay.hpack_codec import Block, encode_field, encode_literal
from sidecar.h2relay.relay import Pool, Upstream
from sidecar.h2relay.timers import Wheel
from sidecar.policy import CallState, Refusal
from sidecar.proxy.forward import Answer
from sidecar.proxy.headers import Pairs, forwardable

_CODES = {name: grpc.StatusCode[name] for name in STATUS_BY_WIRE.values()}
# an HTTP status without a grpc-status (a proxy or a web server answered): the spec's map
_FOR_HTTP = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
_KEY = re.compile(r"[0-9a-z_.\-]+")
_USER_AGENT = f"sidecar-client/{__version__}".encode()


class Wires:
    """One upstream's wires: a pool of relay connections and a timer wheel, shared."""

    def __init__(self, max_message_bytes: int, idle_s: float = 300.0) -> None:
        self.pool = Pool(idle_s=idle_s)
        self.wheel = Wheel(self.pool.loop)
        self.max_message_bytes = max_message_bytes

    def __call__(self, address: str) -> Wire:
        return Wire(self, address)

    def start(self) -> None:
        self.pool.start()

    async def close(self) -> None:
        await self.pool.close()
        self.wheel.close()


class Wire:
    """Unary attempts to one endpoint."""

    __slots__ = ("_endpoint", "_heads", "_wires")

    def __init__(self, wires: Wires, address: str) -> None:
        host, port = parse_hostport(address)
        self._endpoint = Endpoint(host, port)
        self._wires = wires
        self._heads: dict[str, bytes] = {}  # method -> its encoded fixed fields

    def _head(self, method: str) -> bytes:
        head = self._heads.get(method)
        if head is None:
            fields = (
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", method.encode()),
                (b":authority", self._endpoint.address.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", _USER_AGENT),
            )
            head = b"".join(encode_field(name, value) for name, value in fields)
            if len(self._heads) < 10_000:
                self._heads[method] = head
        return head

    async def unary(
        self, call: CallState, method: str, request: bytes, metadata: Pairs, timeout_s: float | None
    ) -> Answer | Refusal:
        """One attempt: the answer, or a refusal to send it at all (`max_pending` full, or
        metadata no peer would accept)."""
        wires = self._wires
        limit = wires.max_message_bytes
        if len(request) > limit:
            return Answer(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(request)} vs. {limit})",
                (),
                (),
            )
        block = self._head(method)
        if timeout_s is not None:
            block += encode_literal(b"grpc-timeout", encode_timeout(timeout_s))
        try:
            block += _encode_metadata(metadata)
        except ValueError as exc:
            return Refusal("bad_metadata", f"request metadata not sendable: {exc}", "INTERNAL")
        loop = wires.pool.loop
        exchange = _Exchange(
            loop.create_future(), block, b"\0" + len(request).to_bytes(4, "big") + request, limit
        )
        up = wires.pool.get(self._endpoint)
        if up.ready and up.has_slot():
            exchange.open_upstream(up)
        else:
            refusal = call.pending()
            if refusal is not None:
                return refusal
            exchange.pending = call
            exchange.up = up
            up.waiting.append(exchange)
        slot = (
            None if timeout_s is None else wires.wheel.add(time.monotonic() + timeout_s, exchange)
        )
        try:
            return await exchange.future
        except BaseException:
            exchange.cancel()  # the caller went away: the peer must hear of it
            raise
        finally:
            if slot is not None:
                wires.wheel.remove(slot, exchange)
            exchange.leave_pending()


def _encode_metadata(metadata: Pairs) -> bytes:
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


class _Exchange:
    """One attempt's stream: a `Stream` (sidecar/h2relay/relay.py) that an `Upstream`
    connection drives as it drives a relayed call."""

    __slots__ = (
        "block",
        "body",
        "chunks",
        "down",
        "future",
        "headers",
        "limit",
        "pending",
        "sid",
        "up",
        "up_pending",
    )

    def __init__(self, future: asyncio.Future[Answer], block: bytes, body: bytes, limit: int):
        self.future = future
        self.block = block
        self.body = body
        self.limit = MessageLimit(limit)  # walks the answer's length prefixes
        self.up: Upstream | None = None
        self.sid = 0
        self.up_pending: list[memoryview] = []  # request bytes the windows held back
        self.headers: Pairs | None = None  # response headers, once they came
        self.chunks: list[bytes] = []
        self.pending: CallState | None = None  # the max_pending slot held while queued
        self.down = self  # Upstream kicks a queued call's caller once it opened

    def kick(self) -> None:
        return None  # nothing queued on a caller's connection: the caller awaits a future

    def leave_pending(self) -> None:
        if self.pending is not None:
            self.pending.connected()
            self.pending = None

    # -- sending ------------------------------------------------------------------------

    def open_upstream(self, up: Upstream) -> None:
        self.leave_pending()
        self.up = up
        conn = up.conn
        sid = self.sid = conn.open_stream()
        up.calls[sid] = self
        conn.send_headers(sid, self.block, False)
        body, self.body = self.body, b""
        sent = conn.send_data(sid, body, True)
        if sent < len(body):
            self.up_pending.append(memoryview(body)[sent:])
            up.blocked.add(self)
        up.kick()  # one write per connection per loop turn for all calls started in it

    def flush_up(self) -> None:
        """The stream's send window grew: send what it held back."""
        up = self.up
        if up is None or not self.up_pending:
            return
        data = self.up_pending[0]
        sent = up.conn.send_data(self.sid, data, True)
        if sent < len(data):
            self.up_pending[0] = data[sent:]
            return
        self.up_pending.clear()
        up.blocked.discard(self)
        up.kick()

    # -- events from the connection -----------------------------------------------------

    def on_up_headers(self, block: Block, end_stream: bool) -> None:
        if self.future.done():
            return
        read = _read(block)
        if not end_stream:
            if self.headers is not None:
                self._fail(grpc.StatusCode.INTERNAL, "a second header block before the trailers")
            elif read.http != 200:  # no gRPC server: stop its stream, answer by the HTTP status
                self._fail(_FOR_HTTP.get(read.http, grpc.StatusCode.UNKNOWN),
                           f"Received http2 header with status: {read.http}")  # fmt: skip
            else:
                self.headers = read.metadata
            return
        # the trailers; without headers before them a trailers-only answer, whose
        # metadata is the call's trailing metadata
        headers = self.headers or ()
        if read.code is None:
            if self.headers is None and read.http != 200:
                self._answer(_FOR_HTTP.get(read.http, grpc.StatusCode.UNKNOWN),
                             f"Received http2 header with status: {read.http}", (), ())  # fmt: skip
            else:
                self._answer(grpc.StatusCode.UNKNOWN, "missing grpc-status", headers, ())
            return
        if read.code is not grpc.StatusCode.OK:
            self._answer(read.code, read.details, headers, read.metadata)
            return
        response = self._message()
        if response is None:
            self._answer(grpc.StatusCode.INTERNAL,
                         "the peer answered OK without exactly one uncompressed message",
                         headers, read.metadata)  # fmt: skip
            return
        self._answer(read.code, read.details, headers, read.metadata, response)

    def on_up_data(self, data: bytes, end_stream: bool, flow: int) -> None:
        up = self.up
        if up is None:
            return
        up.conn.consumed(self.sid, flow)
        if self.future.done():
            return
        if not self.limit.feed(data):
            self._fail(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"Received message larger than max ({self.limit.limit} bytes)")  # fmt: skip
            return
        self.chunks.append(data)
        if end_stream:
            self._answer(grpc.StatusCode.INTERNAL, "the peer ended the stream without trailers",
                         self.headers or (), ())  # fmt: skip

    def on_up_reset(self, code: int) -> None:
        if code == F.REFUSED_STREAM and self.headers is None:
            self.on_up_refused()
            return
        status = grpc.StatusCode[STATUS_FOR_RST.get(code, "INTERNAL")]
        self._answer(status, f"Received RST_STREAM with error code {code}", self.headers or (), ())

    def on_up_lost(self, why: str, connect: bool) -> None:
        self.up = None  # the connection is gone: nothing to reset
        if connect:
            self._answer(grpc.StatusCode.UNAVAILABLE,
                         f"failed to connect to all addresses; last error: {why}", (), ())  # fmt: skip
        else:
            self._answer(grpc.StatusCode.UNAVAILABLE, f"Socket closed ({why})",
                         self.headers or (), ())  # fmt: skip

    def on_up_refused(self) -> None:
        """The peer said it never processed the stream (GOAWAY, REFUSED_STREAM)."""
        self._answer(grpc.StatusCode.UNAVAILABLE,
                     "Socket closed (the peer refused the stream unprocessed)", (), ())  # fmt: skip

    def fire(self) -> None:
        """The attempt's timeout (the timer wheel)."""
        if not self.future.done():
            self._fail(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def crashed(self) -> None:
        """One of our handlers raised: end this attempt, not the connection."""
        self._fail(grpc.StatusCode.INTERNAL, "the in-process client failed reading the answer")

    # -- ending ---------------------------------------------------------------------------

    def cancel(self) -> None:
        if not self.future.done():
            self.future.cancel()
        self._detach(reset=True)

    def _fail(self, code: grpc.StatusCode, details: str) -> None:
        """End the attempt locally: the peer hears RST_STREAM(CANCEL)."""
        self._detach(reset=True)
        self._answer(code, details, self.headers or (), ())

    def _answer(
        self, code: grpc.StatusCode, details: str, headers: Pairs, trailers: Pairs,
        response: bytes | None = None,
    ) -> None:  # fmt: skip
        self._detach(reset=bool(self.up_pending))
        if not self.future.done():
            self.future.set_result(Answer(code, details, headers, trailers, response))

    def _detach(self, reset: bool) -> None:
        up = self.up
        if up is None:
            return
        self.up = None
        if self.sid:
            up.calls.pop(self.sid, None)
            up.blocked.discard(self)
            if reset:
                up.conn.reset(self.sid, F.CANCEL)
                up.kick()
            else:
                up.conn.close_stream(self.sid)
        elif self in up.waiting:
            up.waiting.remove(self)

    def _message(self) -> bytes | None:
        """The one uncompressed message of a unary answer, or None."""
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            return None
        return data[5:]


@dataclass(slots=True)
class _Read:
    """What a response header block says, read once per distinct block (the
    connection's decoder hands back the same Block for the same bytes)."""

    http: int  # :status, 0 when missing or not a number
    code: grpc.StatusCode | None  # grpc-status, None when absent
    details: str  # grpc-message, percent-decoded
    metadata: Pairs  # as grpcio shows it: reserved keys dropped, `-bin` values decoded


def _read(block: Block) -> _Read:
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
            code = _CODES.get(STATUS_BY_WIRE.get(raw, "UNKNOWN"), grpc.StatusCode.UNKNOWN)
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
    read = block.prepared = _Read(http, code, details, forwardable(pairs))
    return read
