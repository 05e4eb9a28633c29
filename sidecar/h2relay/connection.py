"""One HTTP/2 connection, sans-IO: bytes in, handler calls out, bytes to send in `out`.

Pure (no I/O). Serves both ends of the relay: `client=False` for a connection a caller
opened to us, `client=True` for a pooled connection we opened to an endpoint. What it
does itself, so the relay never has to: the preface; SETTINGS (apply, ACK); PING (ACK);
CONTINUATION reassembly; HPACK decoding of every block, in order; both directions of
flow control (RFC 9113 §6.9: our receive windows are credited back only when the relay
says the data moved on, so a slow reader stalls its writer instead of filling memory);
stream-id rules; header-list-size and header-block limits. Any violation of RFC 9113
that is a connection error raises ProtocolError: the I/O layer sends GOAWAY and closes.

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

    __slots__ = ("recv", "remote_closed", "send", "unacked")

    def __init__(self, send: int, recv: int) -> None:
        self.send = send  # what the peer lets us send
        self.recv = recv  # what we still let the peer send
        self.unacked = 0  # consumed but not yet returned in a WINDOW_UPDATE
        self.remote_closed = False


class Settings:
    """What we advertise. Large windows keep a relay from stalling on round trips."""

    __slots__ = ("connection_window", "max_block", "max_header_list", "max_streams", "window")

    def __init__(
        self,
        window: int = 4 * 1024 * 1024,
        connection_window: int = 16 * 1024 * 1024,
        max_streams: int = 10_000,
        max_header_list: int = 16 * 1024,
        max_block: int = 64 * 1024,
    ) -> None:
        self.window = window
        self.connection_window = connection_window
        self.max_streams = max_streams
        self.max_header_list = max_header_list
        self.max_block = max_block  # raw HEADERS+CONTINUATION bytes we buffer at most


class H2Connection:
    def __init__(self, handler: Handler, *, client: bool, settings: Settings | None = None):
        self.handler = handler
        self.client = client
        self.local = settings or Settings()
        self.out: list[bytes | memoryview] = []
        self.decoder = Decoder()
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
                if not flags & F.ACK:
                    self.out.append(F.ping(payload, ack=True))
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
            elif ftype == F.PUSH_PROMISE:
                raise F.ProtocolError(F.PROTOCOL_ERROR, "PUSH_PROMISE (push is disabled)")
            # other types: ignored (RFC 9113 §4.1: unknown frame types are discarded)
        self._buf = buf[pos:] if pos < end else b""

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
        if stream is None or stream.remote_closed:
            self.consumed(0, flow)  # nobody will read it: give the window back now
            if stream is not None:
                self.reset(sid, F.STREAM_CLOSED)
                self.handler.on_reset(sid, F.STREAM_CLOSED)
            return
        if flow > stream.recv:
            raise F.ProtocolError(F.FLOW_CONTROL_ERROR, f"DATA beyond stream {sid}'s window")
        stream.recv -= flow
        end_stream = bool(flags & F.END_STREAM)
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
            start += 5
        if start > stop:
            raise F.ProtocolError(F.PROTOCOL_ERROR, "padding longer than the frame")
        fragment = payload[start:stop] if start or stop != len(payload) else payload
        end_stream = bool(flags & F.END_STREAM)
        if flags & F.END_HEADERS:
            self._block(sid, end_stream, fragment)
        else:
            self._continuation = (sid, end_stream, bytearray(fragment))

    def _cont(self, sid: int, flags: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != sid:
            raise F.ProtocolError(F.PROTOCOL_ERROR, "unexpected CONTINUATION")
        _, end_stream, block = self._continuation
        block += payload
        if len(block) > self.local.max_block:
            raise F.ProtocolError(F.ENHANCE_YOUR_CALM, "header block too large")
        if flags & F.END_HEADERS:
            self._continuation = None
            self._block(sid, end_stream, bytes(block))

    def _block(self, sid: int, end_stream: bool, raw: bytes) -> None:
        try:
            block = self.decoder.decode(raw)  # always, to keep the dynamic table in sync
        except HpackError as exc:
            raise F.ProtocolError(F.COMPRESSION_ERROR, str(exc)) from None
        stream = self.streams.get(sid)
        if stream is None:
            ours = (sid & 1) == (1 if self.client else 0)
            if ours or self.client:
                if sid >= self.next_stream or not ours:
                    raise F.ProtocolError(F.PROTOCOL_ERROR, f"HEADERS on idle stream {sid}")
                return  # a stream we already reset
            if sid <= self.last_peer_stream:
                return  # closed: ignored (§5.1)
            self.last_peer_stream = sid
            if len(self.streams) >= self.local.max_streams or self.goaway_sent:
                self.out.append(F.rst_stream(sid, F.REFUSED_STREAM))
                return
            stream = self.streams[sid] = Stream(self.peer_window, self.local.window)
        elif stream.remote_closed:
            self.reset(sid, F.STREAM_CLOSED)
            self.handler.on_reset(sid, F.STREAM_CLOSED)
            return
        if end_stream:
            stream.remote_closed = True
        if block.size > self.local.max_header_list:
            self.handler.on_oversized(sid)
            return
        self.handler.on_headers(sid, block, end_stream)

    def _settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            raise F.ProtocolError(F.PROTOCOL_ERROR, "SETTINGS on a stream")
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
        if grew:
            self.handler.on_window(0)

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise F.ProtocolError(F.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        increment = F.unpack_u32(payload, 0) & 0x7FFFFFFF
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
            return
        del self.streams[sid]
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
        self.out.append(F.headers(sid, block, end_stream, self.peer_max_frame))

    def send_data(self, sid: int, data: bytes | memoryview, end_stream: bool) -> int:
        """Send as much of `data` as the windows allow; the count sent. END_STREAM goes
        only with the last byte."""
        stream = self.streams.get(sid)
        if stream is None:
            return len(data)  # reset meanwhile: drop
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
        self.recv_unacked += flow
        if self.recv_unacked >= self.local.connection_window >> 2:
            self.out.append(F.window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0
        stream = self.streams.get(sid) if sid else None
        if stream is not None and not stream.remote_closed:
            stream.unacked += flow
            if stream.unacked >= self.local.window >> 2:
                self.out.append(F.window_update(sid, stream.unacked))
                stream.recv += stream.unacked
                stream.unacked = 0

    def reset(self, sid: int, code: int) -> None:
        if self.streams.pop(sid, None) is not None:
            self.out.append(F.rst_stream(sid, code))

    def close_stream(self, sid: int) -> None:
        """Forget a stream both sides finished (no frame sent)."""
        self.streams.pop(sid, None)

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
