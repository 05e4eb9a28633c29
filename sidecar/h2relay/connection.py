"""One HTTP/2 connection, sans-IO: bytes in, handler calls out, bytes to send in `out`.

Pure (no I/O). Serves both ends of the relay: `client=False` for a connection a caller
opened to us, `client=True` for a pooled connection we opened to an endpoint. What it
does itself, so the relay never has to: the preface; SETTINGS (apply, ACK); PING (ACK);
CONTINUATION reassembly; HPACK decoding of every block, in order; both directions of
flow control (RFC 9113 §6.9: our receive windows are credited back only when the relay
says the data moved on, so a slow reader stalls its writer instead of filling memory);
stream-id rules; header-list-size and header-block limits. Any violation of RFC 9113
that is a connection error raises ProtocolError: the I/O layer sends GOAWAY and closes.

Abuse limits (a caller's connection only, `client=False`; RFC 9113 §10.5 lets an
endpoint treat such activity as a connection error of type ENHANCE_YOUR_CALM). Each is
a counter compared once per frame of its type, no allocation, so the common frames
(HEADERS, DATA) pay a compare or two. A tripped limit raises ProtocolError with `kind`
set (the label of `sidecar_h2_abuse_total`):

- CONTINUATION flood (CVE-2024-27316 and relatives): a header block is bounded before
  decoding, in bytes by the SETTINGS_MAX_HEADER_LIST_SIZE we advertise (RFC 9113
  §10.5.1: a block is processed whole or the connection closed, and a block whose
  encoded form is already larger cannot decode smaller than the limit) and in frames
  by `max_continuation_frames` (nghttp2 1.61's fix: at most 8 CONTINUATION frames).
- HPACK bomb (CVE-2016-6581): the decoder stops keeping fields once the decoded size
  passes the limit (hpack_codec.py), so memory stays bounded and time follows the
  encoded bytes (themselves within the limit). A block that decodes to more than
  `_BOMB_RATIO` times the limit we advertised (from at most the limit in bytes) is an
  attack: the connection ends with ENHANCE_YOUR_CALM, as h2 ends it for any oversized
  list; one merely over the limit is refused on its stream (`on_oversized`).
- The CVE-2019-9512/9515/9518 family, following Envoy's `http2_protocol_options`:
  `max_consecutive_inbound_frames_with_empty_payload` (DATA, HEADERS, CONTINUATION
  with nothing in them and no END_STREAM / END_HEADERS), and PRIORITY and
  WINDOW_UPDATE frames bounded by the work they relate to (per stream opened, and per
  DATA frame we sent). SETTINGS, PING, RST_STREAM on closed streams and unknown frame
  types, frames that ask for no work of the relay, count against
  `max_inbound_control_frames_per_s`; the I/O layer zeroes `control_frames` every second.
  `control_out` counts the control frames we queued in answer (ACKs, RST_STREAM), for
  the I/O layer's bound on those the peer does not read (`max_outbound_control_frames`).

Frames are parsed in place: one `struct.unpack_from` for the 9-byte header and a bytes
slice for the payload; no frame objects (that churn is what the `h2`-based proxy paid
for, FACTS.md). What reaches the handler:

    on_headers(stream_id, block, end_stream)  a whole decoded block (headers or trailers)
    on_oversized(stream_id)                  a block over max_header_list_size (decoded)
    on_data(stream_id, data, end_stream, flow) flow: bytes to credit back via consumed()
    on_reset(stream_id, code)                the peer reset the stream
    on_window(stream_id)                     send window grew (0: the connection's)
    on_goaway(last_stream_id, code)
"""

from __future__ import annotations

from typing import Protocol

from sidecar.h2relay import frames as F
from sidecar.h2relay.fields import content_length, request_error, trailers_error
from sidecar.h2relay.hpack_codec import Block, Decoder, HpackError

_unpack_header = F.HEADER.unpack_from


class Handler(Protocol):
    def on_headers(self, stream_id: int, block: Block, end_stream: bool) -> None: ...
    def on_oversized(self, stream_id: int) -> None: ...
    def on_data(self, stream_id: int, data: bytes, end_stream: bool, flow: int) -> None: ...
    def on_reset(self, stream_id: int, code: int) -> None: ...
    def on_window(self, stream_id: int) -> None: ...
    def on_goaway(self, last_stream_id: int, code: int) -> None: ...


class Stream:
    """Per-stream flow-control state."""

    __slots__ = ("expect", "opening", "recv", "remote_closed", "send", "tiny_credit", "unacked")

    def __init__(self, send: int, recv: int) -> None:
        self.send = send  # what the peer lets us send
        self.recv = recv  # what we still let the peer send
        self.unacked = 0  # consumed but not yet returned in a WINDOW_UPDATE
        self.remote_closed = False
        self.expect = -1  # DATA bytes still due by the request's content-length (-1: none)
        self.tiny_credit = _TINY_CREDIT  # tiny DATA frames it may still send (caller's)
        # ours (client role): where our HEADERS wait in `out`, while nothing else of the
        # stream was queued after them; -1 otherwise (see reset)
        self.opening = -1


# a header list decoding to more than this many times the SETTINGS_MAX_HEADER_LIST_SIZE
# we advertised, from an encoded block within it, is an HPACK bomb: no peer that reads
# our SETTINGS sends one (a block of small literals decodes to ~7x its bytes at most,
# 32 bytes a field included; only indexed references to big entries go further)
_BOMB_RATIO = 4

# closed streams of a caller's connection remembered (the newest), to tell the frames we
# must ignore (in flight after our RST_STREAM, RFC 9113 §5.1) from those on a stream the
# caller itself closed, by RST_STREAM or END_STREAM
_CLOSED_KEPT = 512
_BY_US, _BY_PEER_RESET, _ENDED = 0, 1, 2
# A caller's DATA frame of fewer bytes than a gRPC message prefix, not ending the stream,
# is tiny: no gRPC stack sends one but where a frame boundary falls inside a prefix, at
# most once per larger frame. A stream starts with _TINY_CREDIT of them, each larger
# frame earns one back (up to that), and a stream out of credit is reset
# (ENHANCE_YOUR_CALM, `tiny_data`): a body trickled a byte a frame costs a bounded CPU
# per byte, and a stream error, not a connection error, keeps a pooled connection of
# another sidecar that relays such a stream (its other callers' calls) open.
_TINY_DATA = 5
_TINY_CREDIT = 100


def _request_verdict(block: Block) -> str:
    """Why a caller's request block is malformed ("" if it is not), checked once per
    distinct block (sidecar/h2relay/fields.py); a split block (a cached head plus a
    sidecar's per-call tail, hpack_codec.Decoder._split) reuses its head's verdict."""
    verdict = block.checked
    if verdict is not None:
        return verdict
    base = block.base
    if base is not None:
        verdict = _request_verdict(base)
        if not verdict:
            verdict = trailers_error(block.extra) or ""  # the tail: regular fields only
        block.length = base.length
    else:
        verdict = request_error(block.headers) or ""
        if not verdict:
            block.length = content_length(block.headers)
    block.checked = verdict
    return verdict


class Settings:
    """What we advertise, and the limits we hold a caller's connection to (the
    `inbound.http2` / `outbound.http2` config blocks, README). Large windows keep a
    relay from stalling on round trips. The I/O-level limits (timeouts, resets, the
    outbound queue, connections per listener) are kept here too, so that one object
    describes a listener's HTTP/2, and read by sidecar/h2relay/plane.py."""

    __slots__ = (
        "connection_window",
        "frame_timeout_s",
        "idle_timeout_s",
        "max_block",
        "max_buffered",
        "max_connections",
        "max_continuation_frames",
        "max_control_per_s",
        "max_empty_frames",
        "max_header_list",
        "max_outbound_control",
        "max_priority_per_stream",
        "max_streams",
        "max_window_updates_per_data",
        "preface_timeout_s",
        "premature_reset_lifetime_s",
        "premature_reset_streams",
        "window",
    )

    def __init__(
        self,
        window: int = 4 * 1024 * 1024,
        connection_window: int = 16 * 1024 * 1024,
        max_streams: int = 10_000,
        max_header_list: int = 16 * 1024,
        max_block: int = 64 * 1024,
        max_continuation_frames: int = 8,
        max_empty_frames: int = 1,
        max_priority_per_stream: int = 100,
        max_window_updates_per_data: int = 10,
        max_control_per_s: int = 1000,
        max_outbound_control: int = 1000,
        premature_reset_lifetime_s: float = 1.0,
        premature_reset_streams: int = 500,
        preface_timeout_s: float = 10.0,
        frame_timeout_s: float = 10.0,
        idle_timeout_s: float = 3600.0,
        max_connections: int = 1024,
        max_buffered: int = 16 * 1024 * 1024,
    ) -> None:
        self.window = window
        self.connection_window = connection_window
        self.max_streams = max_streams
        self.max_header_list = max_header_list
        # raw HEADERS+CONTINUATION bytes we buffer at most from an endpoint (client role);
        # a caller's block is held to max_header_list
        self.max_block = max_block
        self.max_continuation_frames = max_continuation_frames
        self.max_empty_frames = max_empty_frames
        self.max_priority_per_stream = max_priority_per_stream
        self.max_window_updates_per_data = max_window_updates_per_data
        self.max_control_per_s = max_control_per_s
        # I/O level (plane.py)
        self.max_outbound_control = max_outbound_control
        self.premature_reset_lifetime_s = premature_reset_lifetime_s
        self.premature_reset_streams = premature_reset_streams
        self.preface_timeout_s = preface_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_buffered = max_buffered


class H2Connection:
    def __init__(self, handler: Handler, *, client: bool, settings: Settings | None = None):
        self.handler = handler
        self.client = client
        self.local = settings or Settings()
        self.out: list[bytes | memoryview] = []
        self.decoder = Decoder()
        self.decoder.max_list = self.local.max_header_list
        self.streams: dict[int, Stream] = {}
        # the peer's settings, as they apply to what we send
        self.peer_window = F.DEFAULT_WINDOW
        self.peer_max_frame = F.DEFAULT_MAX_FRAME
        self.peer_max_streams = 2**31 - 1
        self.send_window = F.DEFAULT_WINDOW  # connection level
        self.recv_window = self.local.connection_window
        self.recv_unacked = 0
        self.last_peer_stream = 0  # highest stream id the peer opened
        self.next_stream = 1  # ours (client role)
        self.goaway_received: int | None = None  # last stream id the peer will handle
        self.closed = False
        self._buf = b""
        self._need_preface = not client
        self._need_settings = True
        self._continuation: tuple[int, bool, bytearray] | None = None
        # abuse accounting (see the module docstring); limits apply to callers only
        self.guarded = not client
        self.block_limit = self.local.max_block if client else self.local.max_header_list
        self.opened = 0  # streams the peer opened (and we accepted)
        self.data_sent = 0  # DATA frames we sent
        self.empty_run = 0  # consecutive frames with an empty payload
        self.priority_frames = 0
        self.window_updates = 0
        self.control_frames = 0  # no-work frames since the I/O layer last zeroed it
        self.control_out = 0  # control frames we queued in answer, not yet taken
        self._cont_frames = 0
        # closed streams with how each closed (see _CLOSED_KEPT), and a ring of their
        # ids in the order they closed, the oldest forgotten first
        self.closed_ids: dict[int, int] = {}
        self._closed_ring = [0] * _CLOSED_KEPT if self.guarded else []
        self._closed_pos = 0
        self._self_dependent = 0  # a HEADERS frame's stream that named itself its parent
        # set while the handler hears of a stream we reset for abuse (on_reset): its kind
        self.stream_abuse = ""
        self.partial = False  # a frame or header block is started and not complete
        s = self.local
        initial = F.settings(
            {
                F.ENABLE_PUSH: 0,
                F.MAX_CONCURRENT_STREAMS: s.max_streams,
                F.INITIAL_WINDOW_SIZE: s.window,
                F.MAX_HEADER_LIST_SIZE: s.max_header_list,
            }
        )
        grow = F.window_update(0, s.connection_window - F.DEFAULT_WINDOW)
        self.out.append((F.PREFACE if client else b"") + initial + grow)

    # ---- receiving -------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Feed bytes from the peer; raises ProtocolError on a connection error."""
        buf = self._buf + data if self._buf else data
        if self._need_preface:
            if len(buf) < 24:
                if not F.PREFACE.startswith(buf):
                    raise F.ProtocolError(F.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._buf = buf
                return
            if buf[:24] != F.PREFACE:
                raise F.ProtocolError(F.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._need_preface = False
            buf = buf[24:]
        pos = 0
        end = len(buf)
        max_frame = F.DEFAULT_MAX_FRAME
        while end - pos >= 9:
            hi, lo, ftype, flags, sid = _unpack_header(buf, pos)
            length = (hi << 16) | lo
            if length > max_frame:
                raise F.ProtocolError(F.FRAME_SIZE_ERROR, f"frame of {length} bytes")
            stop = pos + 9 + length
            if stop > end:
                break
            sid &= 0x7FFFFFFF
            payload = buf[pos + 9 : stop]
            pos = stop
            if self._need_settings:
                if ftype != F.SETTINGS or flags & F.ACK:
                    raise F.ProtocolError(F.PROTOCOL_ERROR, "first frame must be SETTINGS")
                self._need_settings = False
            if self._continuation is not None and ftype != F.CONTINUATION:
                raise F.ProtocolError(F.PROTOCOL_ERROR, "expected CONTINUATION")
            if ftype == F.DATA:
                self._data(sid, flags, payload, length)
            elif ftype == F.HEADERS:
                self._headers(sid, flags, payload)
            elif ftype == F.CONTINUATION:
                self._cont(sid, flags, payload)
            elif ftype == F.SETTINGS:
                self._settings(sid, flags, payload)
            elif ftype == F.WINDOW_UPDATE:
                self._window_update(sid, payload)
            elif ftype == F.RST_STREAM:
                self._rst(sid, payload)
            elif ftype == F.PING:
                if sid:
                    raise F.ProtocolError(F.PROTOCOL_ERROR, "PING on a stream")
                if length != 8:
                    raise F.ProtocolError(F.FRAME_SIZE_ERROR, "PING must be 8 bytes")
                if self.guarded:
                    self._control()
                if not flags & F.ACK:
                    self.out.append(F.ping(payload, ack=True))
                    self.control_out += 1
            elif ftype == F.GOAWAY:
                if sid:
                    raise F.ProtocolError(F.PROTOCOL_ERROR, "GOAWAY on a stream")
                if length < 8:
                    raise F.ProtocolError(F.FRAME_SIZE_ERROR, "GOAWAY too short")
                last, code = F.unpack_u32x2(payload, 0)
                last &= 0x7FFFFFFF
                self.goaway_received = last
                self.handler.on_goaway(last, code)
            elif ftype == F.PRIORITY:
                if not sid:
                    raise F.ProtocolError(F.PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    raise F.ProtocolError(F.FRAME_SIZE_ERROR, "PRIORITY must be 5 bytes")
                if F.unpack_u32(payload, 0) & 0x7FFFFFFF == sid:
                    self._self_dependency(sid)
                if self.guarded:
                    self.priority_frames += 1
                    if self.priority_frames > self.local.max_priority_per_stream * (
                        1 + self.opened
                    ):
                        raise F.ProtocolError(
                            F.ENHANCE_YOUR_CALM, "too many PRIORITY frames", "control_flood"
                        )
            elif ftype == F.PUSH_PROMISE:
                raise F.ProtocolError(F.PROTOCOL_ERROR, "PUSH_PROMISE (push is disabled)")
            elif self.guarded:
                # other types are ignored (RFC 9113 §4.1), and cost a frame of the budget
                self._control()
        self._buf = buf[pos:] if pos < end else b""
        self.partial = pos < end or self._continuation is not None

    def _self_dependency(self, sid: int) -> None:
        """A PRIORITY frame making a stream depend on itself: a stream error (RFC 7540
        §5.3.1; RFC 9113 §5.3.2 keeps the frame's rules), as a connection error when
        the stream is not open (RST_STREAM may not be sent on an idle stream, §6.4)."""
        if sid not in self.streams:
            raise F.ProtocolError(F.PROTOCOL_ERROR, f"stream {sid} depends on itself")
        self._stream_error(sid, F.PROTOCOL_ERROR)

    def _stream_error(self, sid: int, code: int) -> None:
        """Reset an open stream for the peer's fault and tell the handler (§5.4.2). On a
        caller's connection each costs a frame of the control budget, so that a caller
        cannot make us reset streams without bound (the MadeYouReset variant of Rapid
        Reset)."""
        if self.guarded:
            self._control()
        self.reset(sid, code)
        self.handler.on_reset(sid, code)

    def _closed_frame(self, sid: int, what: str) -> None:
        """DATA or HEADERS on a caller's stream that is closed (§5.1): ignored when we
        reset it (frames in flight) or it is too old to tell; after the caller's own
        RST_STREAM a stream error of type STREAM_CLOSED (then ignored, as ours), after its
        END_STREAM a connection error of that type. HEADERS on a stream never opened,
        below the newest one, is a PROTOCOL_ERROR (stream ids only grow, §5.1.1)."""
        how = self.closed_ids.get(sid)
        if how is None:
            if what == "HEADERS":
                raise F.ProtocolError(
                    F.PROTOCOL_ERROR, f"HEADERS on stream {sid}, below {self.last_peer_stream}"
                )
            return
        if how == _ENDED:
            raise F.ProtocolError(F.STREAM_CLOSED, f"{what} on closed stream {sid}")
        if how == _BY_PEER_RESET:
            self._control()
            self.out.append(F.rst_stream(sid, F.STREAM_CLOSED))
            self.control_out += 1
            self.closed_ids[sid] = _BY_US

    def _closed(self, sid: int, how: int) -> None:
        closed = self.closed_ids
        ring = self._closed_ring
        pos = self._closed_pos
        old = ring[pos]
        if old:
            closed.pop(old, None)
        ring[pos] = sid
        self._closed_pos = pos + 1 if pos + 1 < _CLOSED_KEPT else 0
        closed[sid] = how

    def _control(self) -> None:
        """A frame that asks no work of the relay: against the per-second budget."""
        self.control_frames += 1
        if self.control_frames > self.local.max_control_per_s:
            raise F.ProtocolError(
                F.ENHANCE_YOUR_CALM, "too many control frames per second", "control_flood"
            )

    def _empty(self, what: str) -> None:
        """A DATA/HEADERS/CONTINUATION frame carrying nothing (Envoy's
        max_consecutive_inbound_frames_with_empty_payload)."""
        self.empty_run += 1
        if self.empty_run > self.local.max_empty_frames:
            raise F.ProtocolError(
                F.ENHANCE_YOUR_CALM, f"too many empty {what} frames in a row", "empty_frames"
            )

    def in_preface(self) -> bool:
        """The peer has not yet sent its whole preface and first SETTINGS (§3.4)."""
        return self._need_preface or self._need_settings

    def incomplete(self) -> str:
        """What is started and not complete: "headers" (a header block, or a HEADERS or
        CONTINUATION frame in part), "frame" (another frame in part), or ""."""
        if self._continuation is not None:
            return "headers"
        buf = self._buf
        if len(buf) >= 4 and buf[3] in (F.HEADERS, F.CONTINUATION):
            return "headers"
        return "frame" if buf else ""

    def _stream_for_frame(self, sid: int, what: str) -> Stream | None:
        """The open stream, or None for one already closed (frames in flight after our
        RST_STREAM are ignored, §5.1); frames on idle streams are connection errors."""
        stream = self.streams.get(sid)
        if stream is not None:
            return stream
        if sid == 0:
            raise F.ProtocolError(F.PROTOCOL_ERROR, f"{what} on stream 0")
        ours = (sid & 1) == (1 if self.client else 0)
        if (ours and sid >= self.next_stream) or (not ours and sid > self.last_peer_stream):
            raise F.ProtocolError(F.PROTOCOL_ERROR, f"{what} on idle stream {sid}")
        return None

    def _data(self, sid: int, flags: int, payload: bytes, flow: int) -> None:
        stream = self._stream_for_frame(sid, "DATA")
        if flow > self.recv_window:
            raise F.ProtocolError(F.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= flow
        if flags & F.PADDED:
            if not payload or payload[0] >= len(payload):
                raise F.ProtocolError(F.PROTOCOL_ERROR, "padding longer than the frame")
            payload = payload[1 : len(payload) - payload[0]]
        if not payload and self.guarded and not flags & F.END_STREAM:
            self._empty("DATA")
        elif self.empty_run:
            self.empty_run = 0
        if stream is None or stream.remote_closed:
            self.consumed(0, flow)  # nobody will read it: give the window back now
            if stream is not None:
                self._stream_error(sid, F.STREAM_CLOSED)
            elif self.guarded:
                self._closed_frame(sid, "DATA")
            return
        if flow > stream.recv:
            raise F.ProtocolError(F.FLOW_CONTROL_ERROR, f"DATA beyond stream {sid}'s window")
        stream.recv -= flow
        end_stream = bool(flags & F.END_STREAM)
        if self.guarded:
            if len(payload) >= _TINY_DATA or end_stream:
                if stream.tiny_credit < _TINY_CREDIT:
                    stream.tiny_credit += 1
            else:
                stream.tiny_credit -= 1
                if stream.tiny_credit < 0:
                    self.consumed(0, flow)
                    self.stream_abuse = "tiny_data"
                    self._stream_error(sid, F.ENHANCE_YOUR_CALM)
                    self.stream_abuse = ""
                    return
        if stream.expect >= 0:  # held to its content-length (§8.1.1)
            stream.expect -= len(payload)
            if stream.expect < 0 or (end_stream and stream.expect):
                self.consumed(0, flow)
                self._stream_error(sid, F.PROTOCOL_ERROR)
                return
        if end_stream:
            stream.remote_closed = True
        self.handler.on_data(sid, payload, end_stream, flow)

    def _headers(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0:
            raise F.ProtocolError(F.PROTOCOL_ERROR, "HEADERS on stream 0")
        start = 0
        stop = len(payload)
        if flags & F.PADDED:
            if not payload:
                raise F.ProtocolError(F.PROTOCOL_ERROR, "padded HEADERS without length")
            stop -= payload[0]
            start = 1
        if flags & F.PRIORITY_FLAG:
            if len(payload) >= start + 4 and F.unpack_u32(payload, start) & 0x7FFFFFFF == sid:
                self._self_dependent = sid  # refused once its block is decoded (§5.3.1)
            start += 5
        if start > stop:
            raise F.ProtocolError(F.PROTOCOL_ERROR, "padding longer than the frame")
        fragment = payload[start:stop] if start or stop != len(payload) else payload
        end_stream = bool(flags & F.END_STREAM)
        if self.guarded:
            if not fragment and not end_stream:
                self._empty("HEADERS")
            elif self.empty_run:
                self.empty_run = 0
        if len(fragment) > self.block_limit:
            self._too_large(len(fragment))
        if flags & F.END_HEADERS:
            self._block(sid, end_stream, fragment)
        else:
            self._cont_frames = 0
            self._continuation = (sid, end_stream, bytearray(fragment))

    def _too_large(self, size: int) -> None:
        """A header block over the limit before decoding: we will not buffer it, and a
        block not processed leaves the HPACK state unknown, so the connection ends
        (RFC 9113 §10.5.1, §4.3)."""
        raise F.ProtocolError(
            F.ENHANCE_YOUR_CALM,
            f"a header block of {size} bytes or more, over the {self.block_limit} of "
            f"SETTINGS_MAX_HEADER_LIST_SIZE",
            "header_too_large",
        )

    def _cont(self, sid: int, flags: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != sid:
            raise F.ProtocolError(F.PROTOCOL_ERROR, "unexpected CONTINUATION")
        _, end_stream, block = self._continuation
        self._cont_frames += 1
        if self.guarded:
            if self._cont_frames > self.local.max_continuation_frames:
                raise F.ProtocolError(
                    F.ENHANCE_YOUR_CALM,
                    f"more than {self.local.max_continuation_frames} CONTINUATION frames",
                    "continuation_flood",
                )
            if not payload and not flags & F.END_HEADERS:
                self._empty("CONTINUATION")
            elif self.empty_run:
                self.empty_run = 0
        block += payload
        if len(block) > self.block_limit:
            self._too_large(len(block))
        if flags & F.END_HEADERS:
            self._continuation = None
            self._block(sid, end_stream, bytes(block))

    def _block(self, sid: int, end_stream: bool, raw: bytes) -> None:
        try:
            block = self.decoder.decode(raw)  # always, to keep the dynamic table in sync
        except HpackError as exc:
            raise F.ProtocolError(F.COMPRESSION_ERROR, str(exc)) from None
        stream = self.streams.get(sid)
        dependent = self._self_dependent
        if dependent:
            self._self_dependent = 0
        if stream is None:
            ours = (sid & 1) == (1 if self.client else 0)
            if ours or self.client:
                if sid >= self.next_stream or not ours:
                    raise F.ProtocolError(F.PROTOCOL_ERROR, f"HEADERS on idle stream {sid}")
                return  # a stream we already reset
            if sid <= self.last_peer_stream:
                if self.guarded:
                    self._closed_frame(sid, "HEADERS")
                return  # closed: ignored (§5.1)
            self.last_peer_stream = sid
            if len(self.streams) >= self.local.max_streams or self.goaway_sent:
                self.out.append(F.rst_stream(sid, F.REFUSED_STREAM))
                self.control_out += 1
                if self.guarded:
                    self._closed(sid, _BY_US)
                return
            if self.guarded and (
                (_request_verdict(block) if block.checked is None else block.checked)
                or dependent == sid
                or (end_stream and block.length > 0)
            ):
                # malformed (RFC 9113 §8.1.1): a stream error, before any call starts
                self._control()
                self.out.append(F.rst_stream(sid, F.PROTOCOL_ERROR))
                self.control_out += 1
                self._closed(sid, _BY_US)
                return
            stream = self.streams[sid] = Stream(self.peer_window, self.local.window)
            if self.guarded:
                stream.expect = block.length
            self.opened += 1
        elif stream.remote_closed:
            self._stream_error(sid, F.STREAM_CLOSED)
            return
        elif self.guarded and (
            not end_stream or stream.expect > 0 or trailers_error(block.headers) is not None
        ):
            # trailers must end the stream and carry no pseudo-header (§8.1)
            self._stream_error(sid, F.PROTOCOL_ERROR)
            return
        if end_stream:
            stream.remote_closed = True
        if block.size > self.local.max_header_list:
            if self.guarded and block.size > _BOMB_RATIO * self.local.max_header_list:
                raise F.ProtocolError(
                    F.ENHANCE_YOUR_CALM,
                    f"a header block of {len(raw)} bytes decodes to over {block.size}",
                    "hpack_bomb",
                )
            self.handler.on_oversized(sid)
            return
        self.handler.on_headers(sid, block, end_stream)

    def _settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise F.ProtocolError(F.PROTOCOL_ERROR, "SETTINGS on a stream")
        if self.guarded:
            self._control()
        if flags & F.ACK:
            if payload:
                raise F.ProtocolError(F.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise F.ProtocolError(F.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        grew = False
        for pos in range(0, len(payload), 6):
            key, value = F.unpack_setting(payload, pos)
            if key == F.INITIAL_WINDOW_SIZE:
                if value > F.MAX_WINDOW:
                    raise F.ProtocolError(F.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too big")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():  # §6.9.2
                    stream.send += delta
                    if stream.send > F.MAX_WINDOW:
                        raise F.ProtocolError(F.FLOW_CONTROL_ERROR, "stream window overflow")
                grew = grew or delta > 0
            elif key == F.MAX_FRAME_SIZE:
                if not F.DEFAULT_MAX_FRAME <= value <= F.MAX_FRAME_LIMIT:
                    raise F.ProtocolError(F.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            elif key == F.MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == F.ENABLE_PUSH and (value > 1 or (value and self.client)):
                raise F.ProtocolError(F.PROTOCOL_ERROR, "bad ENABLE_PUSH")
            # HEADER_TABLE_SIZE: our encoder never uses the dynamic table; others: advisory
        self.out.append(F.SETTINGS_ACK)
        self.control_out += 1
        if grew:
            self.handler.on_window(0)

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise F.ProtocolError(F.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        increment = F.unpack_u32(payload, 0) & 0x7FFFFFFF
        if self.guarded:
            self.window_updates += 1
            # Envoy's bound: 5 + 2 x (streams opened + the ratio x DATA frames sent), since
            # a client also credits windows of streams it opened (gRPC clients do, on each)
            limit = 5 + 2 * (self.opened + self.local.max_window_updates_per_data * self.data_sent)
            if self.window_updates > limit:
                raise F.ProtocolError(
                    F.ENHANCE_YOUR_CALM, "too many WINDOW_UPDATE frames", "control_flood"
                )
        if sid == 0:
            if increment == 0:
                raise F.ProtocolError(F.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > F.MAX_WINDOW:
                raise F.ProtocolError(F.FLOW_CONTROL_ERROR, "connection window overflow")
            self.handler.on_window(0)
            return
        stream = self._stream_for_frame(sid, "WINDOW_UPDATE")
        if stream is None:
            return
        if increment == 0:
            self.reset(sid, F.PROTOCOL_ERROR)
            self.handler.on_reset(sid, F.PROTOCOL_ERROR)
            return
        stream.send += increment
        if stream.send > F.MAX_WINDOW:
            self.reset(sid, F.FLOW_CONTROL_ERROR)
            self.handler.on_reset(sid, F.FLOW_CONTROL_ERROR)
            return
        self.handler.on_window(sid)

    def _rst(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise F.ProtocolError(F.FRAME_SIZE_ERROR, "RST_STREAM must be 4 bytes")
        stream = self._stream_for_frame(sid, "RST_STREAM")
        if stream is None:
            if self.guarded:
                self._control()  # a reset of a stream already closed: no work
            return
        del self.streams[sid]
        if self.guarded:
            self._closed(sid, _BY_PEER_RESET)
        self.handler.on_reset(sid, F.unpack_u32(payload, 0))

    # ---- sending ---------------------------------------------------------------

    goaway_sent = False

    def open_stream(self) -> int:
        """A new stream id of ours (client role)."""
        sid = self.next_stream
        self.next_stream += 2
        self.streams[sid] = Stream(self.peer_window, self.local.window)
        return sid

    def send_headers(self, sid: int, block: bytes, end_stream: bool) -> None:
        if self.client:
            stream = self.streams.get(sid)
            if stream is not None:
                stream.opening = len(self.out)
        self.out.append(F.headers(sid, block, end_stream, self.peer_max_frame))

    def send_data(self, sid: int, data: bytes | memoryview, end_stream: bool) -> int:
        """Send as much of `data` as the windows allow; the count sent. END_STREAM goes
        only with the last byte."""
        stream = self.streams.get(sid)
        if stream is None:
            return len(data)  # reset meanwhile: drop
        stream.opening = -1
        size = len(data)
        allowed = min(size, self.send_window, stream.send)
        if allowed <= 0 and size:
            return 0
        max_frame = self.peer_max_frame
        out = self.out
        pos = 0
        while True:
            n = min(allowed - pos, max_frame)
            last = pos + n >= size
            flags = F.END_STREAM if (last and end_stream) else 0
            out.append(F.header(n, F.DATA, flags, sid))
            self.data_sent += 1
            if n:
                out.append(data[pos : pos + n] if n != size else data)
            pos += n
            if pos >= allowed:
                break
        self.send_window -= allowed
        stream.send -= allowed
        return allowed

    def consumed(self, sid: int, flow: int) -> None:
        """Credit `flow` bytes back to the peer: the relay moved them on."""
        self.credit_connection(flow)
        if sid:
            self.credit_stream(sid, flow)

    def credit_connection(self, flow: int) -> None:
        """The connection's half of `consumed`: the bytes are off the connection (held
        by the relay for one stream, whose own window is credited when they move on)."""
        self.recv_unacked += flow
        if self.recv_unacked >= self.local.connection_window >> 2:
            self.out.append(F.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0

    def credit_stream(self, sid: int, flow: int) -> None:
        """The stream's half of `consumed`."""
        stream = self.streams.get(sid)
        if stream is not None and not stream.remote_closed:
            stream.unacked += flow
            if stream.unacked >= self.local.window >> 2:
                self.out.append(F.window_update(sid, stream.unacked))
                stream.recv += stream.unacked
                stream.unacked = 0

    def reset(self, sid: int, code: int) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        if self.guarded:
            self._closed(sid, _BY_US)
        pos = stream.opening
        if pos >= 0 and self._withdraw(sid, pos):
            return
        self.out.append(F.rst_stream(sid, code))
        self.control_out += 1

    def _withdraw(self, sid: int, pos: int) -> bool:
        """A stream of ours reset before its HEADERS left `out` (nothing else of it was
        queued): take them back, so the peer never sees the stream. A caller's Rapid
        Reset (CVE-2023-44487) then costs the endpoint nothing and cannot make it close
        our pooled connection for the resets. Skipping a stream id is allowed (RFC 9113
        §5.1.1), and our encoder keeps no HPACK state (hpack_codec.py) to disturb."""
        out = self.out
        if pos >= len(out):
            return False  # `out` was written meanwhile
        frame = out[pos]
        if len(frame) < 9 or frame[3] != F.HEADERS or F.unpack_u32(bytes(frame[5:9]), 0) != sid:
            return False
        out[pos] = b""
        return True

    def close_stream(self, sid: int) -> None:
        """Forget a stream both sides finished (no frame sent)."""
        if self.streams.pop(sid, None) is not None and self.guarded:
            self._closed(sid, _ENDED)

    def goaway(self, code: int, message: str = "") -> None:
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out.append(F.goaway(self.last_peer_stream, code, message.encode()[:200]))

    def ping(self, opaque: bytes = b"\0" * 8) -> None:
        self.out.append(F.ping(opaque))

    def take(self) -> bytes:
        """Everything queued to send, as one write."""
        data = b"".join(self.out)
        self.out.clear()
        return data
