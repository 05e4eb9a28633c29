"""HTTP/2 conformance of both listeners of a real sidecar, driven by a raw peer through
the cases h2spec checks (RFC 9113 and RFC 7541 section by section; README "Conformance
tier" lists them). Each case expects the RFC's answer: a connection error (GOAWAY with
its code, then the connection closed), a stream error (RST_STREAM with its code on that
stream, the connection still answering a PING), the frame ignored (PING still answered)
or the request served (grpc-status 0). Well-behaved callers on other connections of
each listener are served throughout (>= 99%, checked by the last test)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from meshtest.echo.v1 import echo_pb2
from sidecar.h2relay import frames as F
from sidecar.h2relay.hpack_codec import Decoder, encode
from tests.hardening.harness import LISTENERS, GoodCaller, sidecar
from tests.hardening.peer import ECHO_UNARY, RawPeer, request_block
from tests.integration.procs import Proc, Sidecar

pytestmark = pytest.mark.timeout(120)

MAX_STREAMS = 100  # the listeners' max_concurrent_streams here (§5.1.2's case)
PROBE = b"conform!"  # the PING payload that tells the connection still reads frames


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory, echo_app: tuple[Proc, int]) -> Iterator[Sidecar]:
    http2 = {"max_concurrent_streams": MAX_STREAMS}
    with sidecar(tmp_path_factory.mktemp("conformance"), echo_app[1], http2) as proc:
        yield proc


@pytest.fixture(scope="module")
def good(sc: Sidecar) -> Iterator[dict[str, GoodCaller]]:
    """One well-behaved caller per listener for the whole module."""
    callers = {name: GoodCaller(sc.port(name)) for name in LISTENERS}
    for caller in callers.values():
        caller.__enter__()
    yield callers
    for caller in callers.values():
        caller.__exit__(None, None, None)


# ---- frames -------------------------------------------------------------------------


def _message(payload: bytes = b"hi") -> bytes:
    body = echo_pb2.EchoRequest(payload=payload).SerializeToString()
    return b"\0" + len(body).to_bytes(4, "big") + body


BLOCK = request_block()
BODY = _message()
REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", ECHO_UNARY.encode()),
    (b":authority", b"echo"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return F.header(len(payload), ftype, flags, sid) + payload


def headers(sid: int, block: bytes = BLOCK, end_stream: bool = False, flags: int = 0) -> bytes:
    flags |= F.END_HEADERS | (F.END_STREAM if end_stream else 0)
    return frame(F.HEADERS, flags, sid, block)


def data(sid: int, payload: bytes = BODY, end_stream: bool = True, flags: int = 0) -> bytes:
    return frame(F.DATA, flags | (F.END_STREAM if end_stream else 0), sid, payload)


def request(sid: int = 1) -> bytes:
    """A whole unary echo call."""
    return headers(sid) + data(sid)


def block_with(fields: list[tuple[bytes, bytes]]) -> bytes:
    return encode(fields)


def replace(name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    """REQUEST with one field's value changed (None: the field left out)."""
    out = [(n, value if n == name else v) for n, v in REQUEST]
    return [(n, v) for n, v in out if v is not None]


def malformed(fields: list[tuple[bytes, bytes]]) -> bytes:
    return headers(1, block_with(fields)) + data(1)


def _sized_message(total: int) -> bytes:
    """A gRPC-framed EchoRequest of exactly `total` bytes."""
    n = total - 5 - 3  # field tag + a 2-byte length
    body = echo_pb2.EchoRequest(payload=b"x" * n).SerializeToString()
    assert len(body) + 5 == total, len(body)
    return b"\0" + len(body).to_bytes(4, "big") + body


# ---- cases --------------------------------------------------------------------------

CONN, STREAM, IGNORED, SERVED = "connection error", "stream error", "ignored", "served"


@dataclass(frozen=True)
class Case:
    section: str  # "RFC 9113 §6.1" or "RFC 7541 §6.3"
    what: str  # what the peer sends
    send: bytes
    answer: str  # CONN / STREAM / IGNORED / SERVED
    code: int = F.NO_ERROR  # the error code expected (CONN, STREAM)
    stream: int = 1  # the stream of a STREAM answer or SERVED call
    start: bool = True  # preface and SETTINGS first
    # frames sent once the call on `stream` ended (the stream is then closed)
    after_end: bytes = b""


H = F.HEADERS
OPEN = headers(1)  # stream 1 open, its request not ended
BAD_PREFACE = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"
assert len(BAD_PREFACE) == len(F.PREFACE)
PRI_SELF = (1).to_bytes(4, "big") + b"\x10"  # depends on stream 1, weight 17
# RFC 7541 blocks: after the valid request fields
INDEX_70 = BLOCK + b"\xc6"  # indexed field 70, beyond the static and the empty dynamic table
NAME_INDEX_70 = BLOCK + b"\x0f\x37\x01v"  # literal without indexing, name index 70 (15 + 55)
SIZE_UPDATE_LAST = BLOCK + b"\x20"  # a table size update after the fields
SIZE_UPDATE_BIG = b"\x3f\xe2\x1f" + BLOCK  # size update to 4,097 (31 + 4,066), over 4,096
INDEX_0 = b"\x80" + BLOCK
HUFFMAN_LONG_PAD = BLOCK + b"\x00\x01x\x82\xff\xff"  # Huffman value: 16 bits of padding
HUFFMAN_EOS = BLOCK + b"\x00\x01x\x84\xff\xff\xff\xff"  # the EOS symbol inside a value
TRUNCATED = b"\x40\x0a"  # a literal whose name runs past the block

CASES: dict[str, Case] = {
    # 3.4 connection preface
    "bad_preface": Case("RFC 9113 §3.4", "an invalid connection preface", BAD_PREFACE, CONN,
                        F.PROTOCOL_ERROR, start=False),
    "preface_without_settings": Case("RFC 9113 §3.4", "the preface followed by PING, not SETTINGS",
                                     F.PREFACE + F.ping(b"12345678"), CONN, F.PROTOCOL_ERROR,
                                     start=False),
    # 4.1 frame format
    "unknown_frame_type": Case("RFC 9113 §4.1", "a frame of an unknown type",
                               frame(0xFA, 0, 0, b"junk"), IGNORED),
    "undefined_flags": Case("RFC 9113 §4.1", "a request with undefined flags set on its frames",
                            headers(1, flags=0xD2) + data(1, flags=0x16), SERVED),
    "reserved_bit": Case("RFC 9113 §4.1", "a request with the stream id's reserved bit set",
                         headers(0x80000001) + data(0x80000001), SERVED),
    # 4.2 frame size
    "data_max_frame_size": Case("RFC 9113 §4.2", "a DATA frame of 16,384 bytes (the maximum)",
                                headers(1) + data(1, _sized_message(16384)), SERVED),
    "data_over_max_frame_size": Case("RFC 9113 §4.2", "a DATA frame over SETTINGS_MAX_FRAME_SIZE",
                                     OPEN + data(1, b"x" * 16385), CONN, F.FRAME_SIZE_ERROR),
    "headers_over_max_frame_size": Case("RFC 9113 §4.2", "a HEADERS frame over SETTINGS_MAX_FRAME_SIZE",
                                        headers(1, BLOCK + b"\x82" * 16385), CONN,
                                        F.FRAME_SIZE_ERROR),
    # 4.3 field section compression
    "invalid_block": Case("RFC 9113 §4.3", "a header block that does not decode",
                          headers(1, TRUNCATED), CONN, F.COMPRESSION_ERROR),
    "priority_inside_block": Case("RFC 9113 §4.3", "PRIORITY between HEADERS and its CONTINUATION",
                                  frame(H, 0, 1, BLOCK[:4]) + frame(F.PRIORITY, 0, 1, PRI_SELF[:0] + b"\0\0\0\0\x10"),
                                  CONN, F.PROTOCOL_ERROR),
    "headers_inside_block": Case("RFC 9113 §4.3", "HEADERS of another stream inside a header block",
                                 frame(H, 0, 1, BLOCK[:4]) + headers(3), CONN, F.PROTOCOL_ERROR),
    # 5.1 stream states
    "idle_data": Case("RFC 9113 §5.1", "idle: DATA", data(1), CONN, F.PROTOCOL_ERROR),
    "idle_rst_stream": Case("RFC 9113 §5.1", "idle: RST_STREAM", F.rst_stream(1, F.CANCEL), CONN,
                            F.PROTOCOL_ERROR),
    "idle_window_update": Case("RFC 9113 §5.1", "idle: WINDOW_UPDATE", F.window_update(1, 100),
                               CONN, F.PROTOCOL_ERROR),
    "idle_continuation": Case("RFC 9113 §5.1", "idle: CONTINUATION",
                              frame(F.CONTINUATION, F.END_HEADERS, 1, BLOCK), CONN, F.PROTOCOL_ERROR),
    "half_closed_data": Case("RFC 9113 §5.1", "half-closed (remote): DATA",
                             headers(1, end_stream=True) + data(1), STREAM, F.STREAM_CLOSED),
    "half_closed_headers": Case("RFC 9113 §5.1", "half-closed (remote): HEADERS",
                                headers(1, end_stream=True) + headers(1, end_stream=True), STREAM,
                                F.STREAM_CLOSED),
    "half_closed_continuation": Case("RFC 9113 §5.1", "half-closed (remote): CONTINUATION",
                                     headers(1, end_stream=True)
                                     + frame(F.CONTINUATION, F.END_HEADERS, 1, BLOCK),
                                     CONN, F.PROTOCOL_ERROR),
    "closed_data_after_rst": Case("RFC 9113 §5.1", "closed: DATA after the caller's RST_STREAM",
                                  OPEN + F.rst_stream(1, F.CANCEL) + data(1), STREAM,
                                  F.STREAM_CLOSED),
    "closed_headers_after_rst": Case("RFC 9113 §5.1", "closed: HEADERS after the caller's RST_STREAM",
                                     OPEN + F.rst_stream(1, F.CANCEL) + headers(1, end_stream=True),
                                     STREAM, F.STREAM_CLOSED),
    "closed_continuation_after_rst": Case("RFC 9113 §5.1",
                                          "closed: CONTINUATION after the caller's RST_STREAM",
                                          OPEN + F.rst_stream(1, F.CANCEL)
                                          + frame(F.CONTINUATION, F.END_HEADERS, 1, BLOCK),
                                          CONN, F.PROTOCOL_ERROR),
    "closed_data": Case("RFC 9113 §5.1", "closed: DATA after the call ended", request(1), CONN,
                        F.STREAM_CLOSED, after_end=data(1)),
    "closed_headers": Case("RFC 9113 §5.1", "closed: HEADERS after the call ended", request(1),
                           CONN, F.STREAM_CLOSED, after_end=headers(1, end_stream=True)),
    "closed_window_update_and_rst": Case("RFC 9113 §5.1",
                                         "closed: WINDOW_UPDATE and RST_STREAM after the call ended",
                                         request(1), IGNORED,
                                         after_end=F.window_update(1, 10) + F.rst_stream(1, F.CANCEL)),
    # 5.1.1 stream identifiers
    "even_stream_id": Case("RFC 9113 §5.1.1", "HEADERS on an even (server) stream id",
                           headers(2, end_stream=True), CONN, F.PROTOCOL_ERROR),
    "smaller_stream_id": Case("RFC 9113 §5.1.1", "HEADERS on a stream id below the last one",
                              request(5) + headers(3, end_stream=True), CONN, F.PROTOCOL_ERROR),
    # 5.1.2 stream concurrency
    "over_max_concurrent_streams": Case("RFC 9113 §5.1.2",
                                        f"{MAX_STREAMS + 1} streams open at once (limit {MAX_STREAMS})",
                                        b"".join(headers(s) for s in range(1, 2 * MAX_STREAMS + 2, 2)),
                                        STREAM, F.REFUSED_STREAM, stream=2 * MAX_STREAMS + 1),
    # 5.3 priority: a stream cannot depend on itself
    "headers_depends_on_itself": Case("RFC 9113 §5.3 (RFC 7540 §5.3.1)", "HEADERS depending on its own stream",
                                      frame(H, F.END_HEADERS | F.PRIORITY_FLAG, 1, PRI_SELF + BLOCK)
                                      + data(1), STREAM, F.PROTOCOL_ERROR),
    "priority_depends_on_itself": Case("RFC 9113 §5.3 (RFC 7540 §5.3.1)", "PRIORITY making an open stream depend on itself",
                                       OPEN + frame(F.PRIORITY, 0, 1, PRI_SELF), STREAM,
                                       F.PROTOCOL_ERROR),
    "priority_on_idle_stream": Case("RFC 9113 §5.3", "PRIORITY on an idle stream",
                                    frame(F.PRIORITY, 0, 3, b"\0\0\0\0\x10"), IGNORED),
    # 5.4 error handling
    "connection_error_goaway": Case("RFC 9113 §5.4.1", "an invalid PING: GOAWAY, then the connection closed",
                                    frame(F.PING, 0, 0, b"123456"), CONN, F.FRAME_SIZE_ERROR),
    # 5.5 extending HTTP/2
    "unknown_extension_frame": Case("RFC 9113 §5.5", "an unknown extension frame on a stream",
                                    OPEN + frame(0x16, 0xFF, 1, b"ext"), IGNORED),
    "unknown_frame_inside_block": Case("RFC 9113 §5.5", "an unknown frame inside a header block",
                                       frame(H, 0, 1, BLOCK[:4]) + frame(0x16, 0, 0, b"ext"), CONN,
                                       F.PROTOCOL_ERROR),
    # 6.1 DATA
    "data_stream_0": Case("RFC 9113 §6.1", "DATA on stream 0", data(0), CONN, F.PROTOCOL_ERROR),
    "data_not_open": Case("RFC 9113 §6.1", "DATA on a stream not open", headers(1, end_stream=True)
                          + data(1), STREAM, F.STREAM_CLOSED),
    "data_bad_padding": Case("RFC 9113 §6.1", "DATA whose pad length is not less than the frame",
                             OPEN + frame(F.DATA, F.PADDED, 1, b"\x05abcd"), CONN, F.PROTOCOL_ERROR),
    "data_padded": Case("RFC 9113 §6.1", "a request whose DATA is padded", headers(1)
                        + frame(F.DATA, F.PADDED | F.END_STREAM, 1, b"\x03" + BODY + b"\0\0\0"),
                        SERVED),
    # 6.2 HEADERS
    "headers_stream_0": Case("RFC 9113 §6.2", "HEADERS on stream 0", headers(0, end_stream=True),
                             CONN, F.PROTOCOL_ERROR),
    "headers_bad_padding": Case("RFC 9113 §6.2", "HEADERS whose padding is longer than the frame",
                                frame(H, F.END_HEADERS | F.PADDED, 1, bytes([len(BLOCK) + 1]) + BLOCK),
                                CONN, F.PROTOCOL_ERROR),
    "headers_padded_priority": Case("RFC 9113 §6.2", "a request in padded HEADERS with a priority",
                                    frame(H, F.END_HEADERS | F.PADDED | F.PRIORITY_FLAG, 1,
                                          b"\x02" + b"\0\0\0\0\x10" + BLOCK + b"\0\0") + data(1),
                                    SERVED),
    # 6.3 PRIORITY
    "priority_stream_0": Case("RFC 9113 §6.3", "PRIORITY on stream 0",
                              frame(F.PRIORITY, 0, 0, b"\0\0\0\0\x10"), CONN, F.PROTOCOL_ERROR),
    "priority_bad_length": Case("RFC 9113 §6.3", "PRIORITY of 4 bytes", OPEN
                                + frame(F.PRIORITY, 0, 1, b"\0\0\0\0"), CONN, F.FRAME_SIZE_ERROR),
    # 6.4 RST_STREAM
    "rst_stream_0": Case("RFC 9113 §6.4", "RST_STREAM on stream 0", F.rst_stream(0, F.CANCEL), CONN,
                         F.PROTOCOL_ERROR),
    "rst_bad_length": Case("RFC 9113 §6.4", "RST_STREAM of 3 bytes", OPEN
                           + frame(F.RST_STREAM, 0, 1, b"\0\0\0"), CONN, F.FRAME_SIZE_ERROR),
    # 6.5 SETTINGS
    "settings_ack_with_payload": Case("RFC 9113 §6.5", "SETTINGS ACK with a payload",
                                      frame(F.SETTINGS, F.ACK, 0, b"\0\x03\0\0\0\x64"), CONN,
                                      F.FRAME_SIZE_ERROR),
    "settings_on_stream": Case("RFC 9113 §6.5", "SETTINGS on a stream", frame(F.SETTINGS, 0, 1), CONN,
                               F.PROTOCOL_ERROR),
    "settings_bad_length": Case("RFC 9113 §6.5", "SETTINGS of a length not a multiple of 6",
                                frame(F.SETTINGS, 0, 0, b"\0\x03\0\0\0"), CONN, F.FRAME_SIZE_ERROR),
    "settings_enable_push_2": Case("RFC 9113 §6.5.2", "SETTINGS_ENABLE_PUSH of 2",
                                   F.settings({F.ENABLE_PUSH: 2}), CONN, F.PROTOCOL_ERROR),
    "settings_window_too_big": Case("RFC 9113 §6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE of 2^31",
                                    F.settings({F.INITIAL_WINDOW_SIZE: 2**31}), CONN,
                                    F.FLOW_CONTROL_ERROR),
    "settings_max_frame_too_small": Case("RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE of 16,383",
                                         F.settings({F.MAX_FRAME_SIZE: 16383}), CONN, F.PROTOCOL_ERROR),
    "settings_max_frame_too_big": Case("RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE of 2^24",
                                       F.settings({F.MAX_FRAME_SIZE: 2**24}), CONN, F.PROTOCOL_ERROR),
    "settings_unknown": Case("RFC 9113 §6.5.2", "a SETTINGS identifier not defined",
                             F.settings({0xFF: 1}) + request(1), SERVED),
    # 6.7 PING
    "ping_ack_ignored": Case("RFC 9113 §6.7", "a PING with the ACK flag (not answered)",
                             F.ping(b"unasked!", ack=True), IGNORED),
    "ping_on_stream": Case("RFC 9113 §6.7", "PING on a stream", frame(F.PING, 0, 1, b"12345678"),
                           CONN, F.PROTOCOL_ERROR),
    "ping_bad_length": Case("RFC 9113 §6.7", "PING of 6 bytes", frame(F.PING, 0, 0, b"123456"), CONN,
                            F.FRAME_SIZE_ERROR),
    # 6.8 GOAWAY
    "goaway_on_stream": Case("RFC 9113 §6.8", "GOAWAY on a stream",
                             frame(F.GOAWAY, 0, 1, b"\0" * 8), CONN, F.PROTOCOL_ERROR),
    # 6.9 WINDOW_UPDATE
    "window_update_0": Case("RFC 9113 §6.9", "WINDOW_UPDATE of 0 for the connection",
                            F.window_update(0, 0), CONN, F.PROTOCOL_ERROR),
    "window_update_0_stream": Case("RFC 9113 §6.9", "WINDOW_UPDATE of 0 for a stream",
                                   OPEN + F.window_update(1, 0), STREAM, F.PROTOCOL_ERROR),
    "window_update_bad_length": Case("RFC 9113 §6.9", "WINDOW_UPDATE of 3 bytes",
                                     frame(F.WINDOW_UPDATE, 0, 0, b"\0\0\x01"), CONN,
                                     F.FRAME_SIZE_ERROR),
    "window_overflow": Case("RFC 9113 §6.9.1", "WINDOW_UPDATEs taking the connection window over 2^31-1",
                            F.window_update(0, 2**31 - 1), CONN, F.FLOW_CONTROL_ERROR),
    "window_overflow_stream": Case("RFC 9113 §6.9.1", "WINDOW_UPDATEs taking a stream window over 2^31-1",
                                   OPEN + F.window_update(1, 2**31 - 1), STREAM,
                                   F.FLOW_CONTROL_ERROR),
    "initial_window_too_big": Case("RFC 9113 §6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE pushing an open stream over 2^31-1",
                                   OPEN + F.window_update(1, 2**31 - 1 - 65535)
                                   + F.settings({F.INITIAL_WINDOW_SIZE: 65536}), CONN,
                                   F.FLOW_CONTROL_ERROR),
    # 6.10 CONTINUATION
    "continuations": Case("RFC 9113 §6.10", "a request's block in HEADERS and two CONTINUATIONs",
                          frame(H, 0, 1, BLOCK[:3]) + frame(F.CONTINUATION, 0, 1, BLOCK[3:6])
                          + frame(F.CONTINUATION, F.END_HEADERS, 1, BLOCK[6:]) + data(1), SERVED),
    "continuation_then_data": Case("RFC 9113 §6.10", "a frame other than CONTINUATION inside a block",
                                   frame(H, 0, 1, BLOCK[:3]) + frame(F.CONTINUATION, 0, 1, BLOCK[3:6])
                                   + data(1), CONN, F.PROTOCOL_ERROR),
    "continuation_stream_0": Case("RFC 9113 §6.10", "CONTINUATION on stream 0",
                                  frame(H, 0, 1, BLOCK[:3])
                                  + frame(F.CONTINUATION, F.END_HEADERS, 0, BLOCK[3:]), CONN,
                                  F.PROTOCOL_ERROR),
    "continuation_after_end_headers": Case("RFC 9113 §6.10", "CONTINUATION after HEADERS with END_HEADERS",
                                           OPEN + frame(F.CONTINUATION, F.END_HEADERS, 1, BLOCK),
                                           CONN, F.PROTOCOL_ERROR),
    "continuation_after_continuation_end": Case("RFC 9113 §6.10", "CONTINUATION after a CONTINUATION with END_HEADERS",
                                                frame(H, 0, 1, BLOCK[:3])
                                                + frame(F.CONTINUATION, F.END_HEADERS, 1, BLOCK[3:])
                                                + frame(F.CONTINUATION, F.END_HEADERS, 1, b"\x82"),
                                                CONN, F.PROTOCOL_ERROR),
    "continuation_after_data": Case("RFC 9113 §6.10", "CONTINUATION after DATA", OPEN
                                    + data(1, end_stream=False)
                                    + frame(F.CONTINUATION, F.END_HEADERS, 1, b"\x82"), CONN,
                                    F.PROTOCOL_ERROR),
    # 8.1 HTTP message framing
    "trailers_without_end_stream": Case("RFC 9113 §8.1", "a second HEADERS without END_STREAM",
                                        OPEN + data(1, end_stream=False)
                                        + headers(1, block_with([(b"x-t", b"1")])), STREAM,
                                        F.PROTOCOL_ERROR),
    "trailers_with_pseudo_header": Case("RFC 9113 §8.1", "trailers with a pseudo-header",
                                        OPEN + data(1, end_stream=False)
                                        + headers(1, block_with([(b":path", b"/x")]), True),
                                        STREAM, F.PROTOCOL_ERROR),
    "trailers_end_the_request": Case("RFC 9113 §8.1", "a request ended by trailers",
                                     OPEN + data(1, end_stream=False)
                                     + headers(1, block_with([(b"x-t", b"1")]), True), SERVED),
    "content_length_short": Case("RFC 9113 §8.1.1", "DATA shorter than content-length",
                                 headers(1, block_with([*REQUEST, (b"content-length", b"100")]))
                                 + data(1), STREAM, F.PROTOCOL_ERROR),
    "content_length_long": Case("RFC 9113 §8.1.1", "DATA frames longer than content-length",
                                headers(1, block_with([*REQUEST, (b"content-length", b"4")]))
                                + data(1, BODY[:3], False) + data(1, BODY[3:]), STREAM,
                                F.PROTOCOL_ERROR),
    "content_length_exact": Case("RFC 9113 §8.1.1", "a request with a matching content-length",
                                 headers(1, block_with([*REQUEST, (b"content-length",
                                                                   str(len(BODY)).encode())]))
                                 + data(1, BODY[:3], False) + data(1, BODY[3:]), SERVED),
    # 8.2 HTTP fields
    "uppercase_field_name": Case("RFC 9113 §8.2", "a field name in uppercase",
                                 malformed([*REQUEST, (b"X-Upper", b"1")]), STREAM, F.PROTOCOL_ERROR),
    "field_name_with_space": Case("RFC 9113 §8.2.1", "a field name with a space",
                                  malformed([*REQUEST, (b"x bad", b"1")]), STREAM, F.PROTOCOL_ERROR),
    "field_value_with_lf": Case("RFC 9113 §8.2.1", "a field value with LF",
                                malformed([*REQUEST, (b"x-bad", b"a\nb")]), STREAM, F.PROTOCOL_ERROR),
    "field_value_whitespace": Case("RFC 9113 §8.2.1", "a field value ending with a space",
                                   malformed([*REQUEST, (b"x-bad", b"a ")]), STREAM, F.PROTOCOL_ERROR),
    "connection_field": Case("RFC 9113 §8.2.2", "a connection-specific field (connection)",
                             malformed([*REQUEST, (b"connection", b"keep-alive")]), STREAM,
                             F.PROTOCOL_ERROR),
    "transfer_encoding_field": Case("RFC 9113 §8.2.2", "a connection-specific field (transfer-encoding)",
                                    malformed([*REQUEST, (b"transfer-encoding", b"chunked")]), STREAM,
                                    F.PROTOCOL_ERROR),
    "te_not_trailers": Case("RFC 9113 §8.2.2", "te other than trailers", malformed(replace(b"te", b"gzip")),
                            STREAM, F.PROTOCOL_ERROR),
    # 8.3 control data (pseudo-header fields)
    "unknown_pseudo_header": Case("RFC 9113 §8.3", "an unknown pseudo-header",
                                  malformed([(b":foo", b"bar"), *REQUEST]), STREAM, F.PROTOCOL_ERROR),
    "response_pseudo_header": Case("RFC 9113 §8.3", "a response pseudo-header (:status) in a request",
                                   malformed([(b":status", b"200"), *REQUEST]), STREAM,
                                   F.PROTOCOL_ERROR),
    "pseudo_after_regular": Case("RFC 9113 §8.3", "a pseudo-header after a regular field",
                                 malformed([*REQUEST, (b":authority", b"late")]), STREAM,
                                 F.PROTOCOL_ERROR),
    "empty_path": Case("RFC 9113 §8.3.1", "an empty :path", malformed(replace(b":path", b"")), STREAM,
                       F.PROTOCOL_ERROR),
    "no_method": Case("RFC 9113 §8.3.1", "no :method", malformed(replace(b":method", None)), STREAM,
                      F.PROTOCOL_ERROR),
    "no_scheme": Case("RFC 9113 §8.3.1", "no :scheme", malformed(replace(b":scheme", None)), STREAM,
                      F.PROTOCOL_ERROR),
    "no_path": Case("RFC 9113 §8.3.1", "no :path", malformed(replace(b":path", None)), STREAM,
                    F.PROTOCOL_ERROR),
    "duplicate_method": Case("RFC 9113 §8.3.1", ":method twice",
                             malformed([(b":method", b"POST"), *REQUEST]), STREAM, F.PROTOCOL_ERROR),
    "duplicate_scheme": Case("RFC 9113 §8.3.1", ":scheme twice",
                             malformed([(b":scheme", b"http"), *REQUEST]), STREAM, F.PROTOCOL_ERROR),
    "duplicate_path": Case("RFC 9113 §8.3.1", ":path twice",
                           malformed([(b":path", b"/a.B/C"), *REQUEST]), STREAM, F.PROTOCOL_ERROR),
    # 8.4 server push
    "push_promise_from_client": Case("RFC 9113 §8.4", "PUSH_PROMISE from a client",
                                     OPEN + frame(F.PUSH_PROMISE, F.END_HEADERS, 1, b"\0\0\0\x02" + BLOCK),
                                     CONN, F.PROTOCOL_ERROR),
    # RFC 7541 HPACK
    "hpack_index_out_of_range": Case("RFC 7541 §2.3.3", "an indexed field beyond both tables",
                                     headers(1, INDEX_70), CONN, F.COMPRESSION_ERROR),
    "hpack_name_index_out_of_range": Case("RFC 7541 §2.3.3", "a literal whose name index is beyond both tables",
                                          headers(1, NAME_INDEX_70), CONN, F.COMPRESSION_ERROR),
    "hpack_size_update_after_fields": Case("RFC 7541 §4.2", "a table size update after header fields",
                                           headers(1, SIZE_UPDATE_LAST), CONN, F.COMPRESSION_ERROR),
    "hpack_huffman_long_padding": Case("RFC 7541 §5.2", "a Huffman string padded with more than 7 bits",
                                       headers(1, HUFFMAN_LONG_PAD), CONN, F.COMPRESSION_ERROR),
    "hpack_huffman_eos": Case("RFC 7541 §5.2", "a Huffman string holding the EOS symbol",
                              headers(1, HUFFMAN_EOS), CONN, F.COMPRESSION_ERROR),
    "hpack_index_0": Case("RFC 7541 §6.1", "an indexed field of index 0", headers(1, INDEX_0), CONN,
                          F.COMPRESSION_ERROR),
    "hpack_size_update_too_big": Case("RFC 7541 §6.3", "a table size update over SETTINGS_HEADER_TABLE_SIZE",
                                      headers(1, SIZE_UPDATE_BIG), CONN, F.COMPRESSION_ERROR),
}  # fmt: skip


# ---- the driver ---------------------------------------------------------------------


def _read_until(peer: RawPeer, done: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end and peer._read(min(0.2, end - time.monotonic())):
        pass


def _ended(peer: RawPeer, sid: int) -> bool:
    return any(
        t in (F.HEADERS, F.DATA) and s == sid and flags & F.END_STREAM
        for t, flags, s, _ in peer.frames
    )


def _probe_answered(peer: RawPeer) -> bool:
    return any(t == F.PING and flags & F.ACK and p == PROBE for t, flags, _, p in peer.frames)


def _status(peer: RawPeer, sid: int) -> bytes | None:
    """The grpc-status of the call on `sid` (headers decoded in order)."""
    decoder = Decoder()
    status = None
    for t, flags, s, payload in peer.frames:
        if t == F.HEADERS:
            if flags & F.PADDED or not flags & F.END_HEADERS:
                raise AssertionError("the sidecar sends plain HEADERS frames")
            block = decoder.decode(payload)
            if s == sid:
                status = dict(block.headers).get(b"grpc-status", status)
    return status


def run(port: int, case: Case) -> RawPeer:
    peer = RawPeer(port)
    if case.start:
        peer.start()
    peer.send(case.send)
    if case.after_end:
        _read_until(peer, lambda: _ended(peer, case.stream))
        assert _ended(peer, case.stream), f"the call on stream {case.stream} did not end"
        peer.send(case.after_end)
    if case.answer in (STREAM, IGNORED):
        peer.send(F.ping(PROBE))
        _read_until(peer, lambda: _probe_answered(peer) or peer.eof)
    elif case.answer == SERVED:
        _read_until(peer, lambda: _ended(peer, case.stream) or peer.eof)
    else:
        peer.goaway(timeout=5.0)
    return peer


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("name", list(CASES))
def test_case(sc: Sidecar, good: dict[str, GoodCaller], listener: str, name: str) -> None:
    case = CASES[name]
    with run(sc.port(listener), case) as peer:
        goaway = peer.goaway(timeout=0)
        resets = peer.resets()
        if case.answer == CONN:
            assert goaway is not None, (name, peer.frames[-3:], peer.eof)
            assert goaway[1] == case.code, (name, goaway)
            assert peer.closed_within(5), "the connection was not closed after GOAWAY"
            return
        assert goaway is None, (name, goaway)
        if case.answer == STREAM:
            assert (case.stream, case.code) in resets, (name, resets)
            assert _probe_answered(peer), "the connection stopped answering after a stream error"
        elif case.answer == IGNORED:
            assert resets == [], (name, resets)
            assert _probe_answered(peer), (name, peer.frames[-3:])
            assert not any(p == b"unasked!" for t, _, _, p in peer.frames if t == F.PING)
        else:
            assert _status(peer, case.stream) == b"0", (name, resets, peer.frames[-3:])
            assert (case.stream, F.PROTOCOL_ERROR) not in resets


@pytest.mark.parametrize("listener", LISTENERS)
def test_window_of_one_byte(sc: Sidecar, listener: str) -> None:
    """RFC 9113 §6.9.1 / §6.9.2: with SETTINGS_INITIAL_WINDOW_SIZE 1 the response comes
    one byte in a DATA frame, the rest once the caller opens the stream's window."""
    with RawPeer(sc.port(listener)) as peer:
        peer.send(F.PREFACE + F.settings({F.INITIAL_WINDOW_SIZE: 1}) + request(1))

        def sized() -> list[bytes]:
            return [p for t, _, s, p in peer.frames if t == F.DATA and s == 1]

        _read_until(peer, lambda: bool(sized()))
        assert [len(p) for p in sized()] == [1], sized()
        peer.send(F.window_update(1, 1000))
        _read_until(peer, lambda: _ended(peer, 1))
        assert _status(peer, 1) == b"0"
        answer = echo_pb2.EchoResponse.FromString(b"".join(sized())[5:])
        assert answer.payload == b"hi", answer


def test_good_callers_served_throughout(good: dict[str, GoodCaller]) -> None:
    """The well-behaved callers on other connections, through every case above."""
    for name, caller in good.items():
        caller.__exit__(None, None, None)
        print(f"[conformance {name}] " + caller.check())
