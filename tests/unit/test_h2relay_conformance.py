"""HTTP/2 conformance of the relay's sans-IO connection (RFC 9113), bytes in / events out."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.h2relay import frames as F
from sidecar.h2relay.connection import H2Connection, Settings
from sidecar.h2relay.grpcwire import MessageLimit, encode_timeout, parse_timeout
from sidecar.h2relay.hpack_codec import Block, Decoder, HpackError, encode


class Recorder:
    """A handler that records every event."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_headers(self, sid: int, block: Block, end_stream: bool) -> None:
        self.events.append(("headers", sid, block.headers, end_stream))

    def on_oversized(self, sid: int) -> None:
        self.events.append(("oversized", sid))

    def on_data(self, sid: int, data: bytes, end_stream: bool, flow: int) -> None:
        self.events.append(("data", sid, bytes(data), end_stream, flow))

    def on_reset(self, sid: int, code: int) -> None:
        self.events.append(("reset", sid, code))

    def on_window(self, sid: int) -> None:
        self.events.append(("window", sid))

    def on_goaway(self, last: int, code: int) -> None:
        self.events.append(("goaway", last, code))


REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/meshtest.echo.v1.Echo/Unary"),
    (b":authority", b"x"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


def frames_out(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split bytes we sent into (type, flags, stream, payload)."""
    out = []
    pos = 0
    while pos < len(data):
        hi, lo, ftype, flags, sid = F.HEADER.unpack_from(data, pos)
        length = (hi << 16) | lo
        out.append((ftype, flags, sid, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return out


def server(**kw: Any) -> tuple[H2Connection, Recorder]:
    rec = Recorder()
    conn = H2Connection(rec, client=False, settings=Settings(**kw))
    conn.take()  # our SETTINGS + WINDOW_UPDATE
    conn.receive(F.PREFACE + F.settings({}))
    sent = frames_out(conn.take())
    assert (F.SETTINGS, F.ACK) in [(t, f) for t, f, _, _ in sent]
    return conn, rec


def test_server_sends_settings_and_window_first() -> None:
    """A new server connection announces SETTINGS (push off) and grows the connection window."""
    conn = H2Connection(Recorder(), client=False)
    sent = frames_out(conn.take())
    assert sent[0][0] == F.SETTINGS and sent[1][0] == F.WINDOW_UPDATE


def test_bad_preface_is_protocol_error() -> None:
    """An HTTP/1.1 request instead of the preface is a connection error."""
    conn = H2Connection(Recorder(), client=False)
    with pytest.raises(F.ProtocolError):
        conn.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_settings_ack_and_ping_ack() -> None:
    """SETTINGS is acknowledged; PING is answered with the same payload and the ACK flag."""
    conn, _ = server()
    conn.receive(F.ping(b"12345678"))
    assert frames_out(conn.take()) == [(F.PING, F.ACK, 0, b"12345678")]
    conn.receive(F.ping(b"abcdefgh", ack=True))
    assert conn.take() == b""


def test_headers_then_data_events() -> None:
    """A request's HEADERS and DATA arrive as events with the flow-controlled length."""
    conn, rec = server()
    conn.receive(F.headers(1, encode(REQUEST), False, 16384))
    conn.receive(F.header(5, F.DATA, F.END_STREAM, 1) + b"hello")
    assert rec.events[0] == ("headers", 1, tuple(REQUEST), False)
    assert rec.events[1] == ("data", 1, b"hello", True, 5)


def test_continuation_reassembled() -> None:
    """A header block split over HEADERS + CONTINUATION decodes as one block."""
    conn, rec = server()
    fields = [*REQUEST, (b"x-big", b"v" * 3000)]
    conn.receive(F.headers(1, encode(fields), True, 1000))
    assert rec.events == [("headers", 1, tuple(fields), True)]


def test_interleaved_continuation_is_error() -> None:
    """Another frame between HEADERS and its CONTINUATION is a PROTOCOL_ERROR."""
    conn, _ = server()
    block = encode(REQUEST)
    with pytest.raises(F.ProtocolError) as err:
        conn.receive(F.header(len(block), F.HEADERS, 0, 1) + block + F.ping(b"12345678"))
    assert err.value.code == F.PROTOCOL_ERROR


def test_header_list_size_limit() -> None:
    """A header list over max_header_list (from a block within it) is reported as
    oversized, still decoded in order."""
    conn, rec = server(max_header_list=1000)
    many = [(b"x-%d" % i, b"") for i in range(30)]  # ~6 bytes each, 35 decoded
    conn.receive(F.headers(1, encode([*REQUEST, *many]), True, 16384))
    conn.receive(F.headers(3, encode(REQUEST), True, 16384))
    assert rec.events[0] == ("oversized", 1)
    assert rec.events[1][0:2] == ("headers", 3)


def test_rst_stream_event_and_stream_forgotten() -> None:
    """RST_STREAM from the peer reaches the handler; a later DATA frame on it is a stream
    error (RST_STREAM(STREAM_CLOSED), RFC 9113 §5.1), and frames after that are ignored."""
    conn, rec = server()
    conn.receive(F.headers(1, encode(REQUEST), False, 16384))
    conn.receive(F.rst_stream(1, F.CANCEL))
    conn.take()
    conn.receive(F.header(3, F.DATA, 0, 1) + b"abc")
    assert rec.events[1] == ("reset", 1, F.CANCEL)
    assert len(rec.events) == 2
    assert [(t, sid, F.unpack_u32(p, 0)) for t, _, sid, p in frames_out(conn.take())] == [
        (F.RST_STREAM, 1, F.STREAM_CLOSED)
    ]
    conn.receive(F.header(3, F.DATA, 0, 1) + b"abc")
    assert all(t != F.RST_STREAM for t, *_ in frames_out(conn.take()))


def test_goaway_event() -> None:
    """GOAWAY reaches the handler with the last stream id and the code."""
    conn, rec = server()
    conn.receive(F.goaway(7, F.NO_ERROR))
    assert rec.events == [("goaway", 7, F.NO_ERROR)]
    assert conn.goaway_received == 7


def test_flow_control_send_window() -> None:
    """We send no more than the peer's window, and resume on its WINDOW_UPDATE."""
    conn, rec = server()
    conn.receive(F.settings({F.INITIAL_WINDOW_SIZE: 10}))
    conn.receive(F.headers(1, encode(REQUEST), True, 16384))
    conn.take()
    assert conn.send_data(1, b"x" * 25, True) == 10
    assert conn.send_data(1, b"x" * 15, True) == 0
    conn.receive(F.window_update(1, 100))
    assert ("window", 1) in rec.events
    assert conn.send_data(1, b"x" * 15, True) == 15
    sent = frames_out(conn.take())
    data = [(f, p) for t, f, _, p in sent if t == F.DATA]
    assert data == [(0, b"x" * 10), (F.END_STREAM, b"x" * 15)]


def test_settings_window_change_applies_to_open_streams() -> None:
    """A new INITIAL_WINDOW_SIZE shifts every open stream's window by the difference."""
    conn, _ = server()
    conn.receive(F.headers(1, encode(REQUEST), False, 16384))
    before = conn.streams[1].send
    conn.receive(F.settings({F.INITIAL_WINDOW_SIZE: 1000}))
    assert conn.streams[1].send == before + 1000 - F.DEFAULT_WINDOW


def test_receive_window_credited_on_consume() -> None:
    """Consumed bytes go back to the peer as WINDOW_UPDATEs once a quarter is used."""
    conn, _ = server(window=100, connection_window=65535 * 4)
    conn.receive(F.headers(1, encode(REQUEST), False, 16384))
    conn.receive(F.header(30, F.DATA, 0, 1) + b"x" * 30)
    conn.consumed(1, 30)
    assert (F.WINDOW_UPDATE, 0, 1, (30).to_bytes(4, "big")) in frames_out(conn.take())


def test_data_beyond_window_is_flow_control_error() -> None:
    """DATA past the stream window we granted is a FLOW_CONTROL_ERROR."""
    conn, _ = server(window=10)
    conn.receive(F.headers(1, encode(REQUEST), False, 16384))
    with pytest.raises(F.ProtocolError) as err:
        conn.receive(F.header(20, F.DATA, 0, 1) + b"x" * 20)
    assert err.value.code == F.FLOW_CONTROL_ERROR


def test_data_on_idle_stream_is_error() -> None:
    """DATA on a stream never opened is a PROTOCOL_ERROR."""
    conn, _ = server()
    with pytest.raises(F.ProtocolError):
        conn.receive(F.header(1, F.DATA, 0, 5) + b"x")


def test_oversized_frame_is_frame_size_error() -> None:
    """A frame above our MAX_FRAME_SIZE is a FRAME_SIZE_ERROR."""
    conn, _ = server()
    with pytest.raises(F.ProtocolError) as err:
        conn.receive(F.header(20000, F.DATA, 0, 1) + b"x" * 20000)
    assert err.value.code == F.FRAME_SIZE_ERROR


def test_refuses_streams_over_limit() -> None:
    """A stream beyond MAX_CONCURRENT_STREAMS is refused with RST_STREAM(REFUSED_STREAM)."""
    conn, _ = server(max_streams=1)
    conn.receive(F.headers(1, encode(REQUEST), False, 16384))
    conn.receive(F.headers(3, encode(REQUEST), False, 16384))
    assert frames_out(conn.take()) == [(F.RST_STREAM, 0, 3, F.REFUSED_STREAM.to_bytes(4, "big"))]


def test_client_role_round_trip() -> None:
    """A client connection sends the preface, opens odd streams and reads a response."""
    rec = Recorder()
    client = H2Connection(rec, client=True)
    assert client.take().startswith(F.PREFACE)
    sid = client.open_stream()
    assert sid == 1 and client.open_stream() == 3
    client.receive(F.settings({}))
    client.receive(F.headers(1, encode([(b":status", b"200")]), True, 16384))
    assert rec.events == [("headers", 1, ((b":status", b"200"),), True)]


def test_hpack_dynamic_table_and_cache() -> None:
    """Incremental indexing fills the dynamic table; the cache never serves stale results."""
    dec = Decoder()
    add = b"\x40\x01a\x01b"  # literal with incremental indexing, new name a: b
    assert dec.decode(add).headers == ((b"a", b"b"),)
    assert dec.decode(b"\xbe").headers == ((b"a", b"b"),)  # index 62
    dec.decode(b"\x40\x01c\x01d")
    assert dec.decode(b"\xbe").headers == ((b"c", b"d"),)  # same bytes, new meaning
    with pytest.raises(HpackError):
        dec.decode(b"\xff\xff\xff\xff\xff\xff\x7f")


def test_timeout_round_trip() -> None:
    """grpc-timeout parses every unit and re-encodes with the time rounded up."""
    assert parse_timeout(b"250m") == 0.25
    assert parse_timeout(b"2S") == 2.0
    assert parse_timeout(b"bad") is None
    assert parse_timeout(encode_timeout(1.5)) == pytest.approx(1.5, abs=1e-6)


def test_message_limit_across_frames() -> None:
    """A message length announced over the limit is caught even with a split prefix."""
    limit = MessageLimit(100)
    assert limit.feed(b"\x00\x00\x00") is True
    assert limit.feed(b"\x00\x10" + b"x" * 16) is True
    assert limit.feed(b"\x00\x00\x00\x01\x00") is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_arbitrary_bytes_only_protocol_errors(data: bytes, with_preface: bool) -> None:
    """Any bytes after the preface raise nothing but ProtocolError."""
    conn = H2Connection(Recorder(), client=False)
    with contextlib.suppress(F.ProtocolError):
        conn.receive((F.PREFACE + F.settings({}) if with_preface else b"") + data)


frame_st = st.builds(
    lambda t, f, s, p: F.header(len(p), t, f, s) + p,
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5]),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_st, max_size=8))
def test_arbitrary_frames_only_protocol_errors(frames: list[bytes]) -> None:
    """Well-framed but arbitrary frames raise nothing but ProtocolError."""
    conn = H2Connection(Recorder(), client=False)
    with contextlib.suppress(F.ProtocolError):
        conn.receive(F.PREFACE + F.settings({}) + b"".join(frames))


def _indexed_literal(name_index: int, value: bytes) -> bytes:
    """A literal with incremental indexing, name from the static table (what nginx sends)."""
    return bytes((0x40 | name_index, len(value))) + value


_NGINX_LIKE = [
    _indexed_literal(54, b"nginx/1.22.1") + _indexed_literal(33, b"Thu, 26 Nov 2026"),
    _indexed_literal(31, b"application/grpc") + b"\x88",
    b"\x88" + b"\xbe",  # :status 200, then dynamic entry 62 (reads the table)
    _indexed_literal(33, b"Fri, 27 Nov 2026"),
    b"\x3f\x01",  # table size update to 32 (only the first field of a block)
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(_NGINX_LIKE))), min_size=1, max_size=30))
def test_hpack_cached_blocks_match_the_reference_decoder(order: list[int]) -> None:
    """Blocks that insert (and ones that read the table) decode, cached or not, exactly as
    the `hpack` package decodes them, with the same dynamic table after each."""
    import hpack

    ours, ref = Decoder(), hpack.Decoder()
    for i in order:
        raw = _NGINX_LIKE[i]
        try:
            expected = [(n.encode() if isinstance(n, str) else n,
                         v.encode() if isinstance(v, str) else v)
                        for n, v in ref.decode(raw, raw=True)]  # fmt: skip
        except Exception:
            with pytest.raises(HpackError):
                ours.decode(raw)
            return  # the connection would be dead now
        assert list(ours.decode(raw).headers) == expected
        assert list(ours.entries) == list(ref.header_table.dynamic_entries)


def test_sidecar_blocks_split_into_a_cached_head_and_a_per_call_tail() -> None:
    """Blocks ending with a sidecar's per-call grpc-timeout / x-request-id decode to the same
    fields as a plain decode, the head is reused, and the prepared request matches."""
    from sidecar.h2relay.hpack_codec import encode_literal
    from sidecar.h2relay.request import prepare, prepare_split

    head = encode(REQUEST)
    ours = Decoder()
    for i in range(4):
        tail = encode_literal(b"grpc-timeout", b"%du" % (999_000 + i)) + encode_literal(
            b"x-request-id", b"%032x" % i
        )
        block = ours.decode(head + tail)
        assert list(block.headers) == list(Decoder().decode(head + tail).headers)
        if i:
            assert block.base is not None and block.base.headers == tuple(REQUEST)

            def resolve(_: str, _authority: str | None = None) -> None:
                return None

            split = prepare_split(prepare(block.base.headers, resolve), block.extra, resolve)
            whole = prepare(block.headers, resolve)
            assert split is not None
            assert (split.timeout_s, split.has_request_id, split.block) == (
                whole.timeout_s, whole.has_request_id, whole.block)  # fmt: skip
    # a look-alike inside a value never splits a field
    tricky = encode([(b"x-v", b"\x00\x0cgrpc-timeout")]) + encode_literal(b"grpc-timeout", b"1m")
    d = Decoder()
    for _ in range(3):
        assert list(d.decode(tricky).headers) == [
            (b"x-v", b"\x00\x0cgrpc-timeout"), (b"grpc-timeout", b"1m")]  # fmt: skip
