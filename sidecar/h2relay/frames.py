"""HTTP/2 frame layout (RFC 9113 §4, §6): constants, the 9-byte header, and frame builders.

Pure (no I/O). Builders return `bytes` ready to write; the parser lives in
sidecar/h2relay/connection.py, which reads headers with one `struct.unpack_from` per
frame and never builds a frame object, because per-frame object churn is what made an
`h2`-based proxy cost ~4x more CPU than this relay (FACTS.md).
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings identifiers (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

# Error codes (RFC 9113 §7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1

HEADER = struct.Struct(">BHBBL")  # length as 8 + 16 bits, type, flags, R + stream id
_U32 = struct.Struct(">L")
_U32X2 = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")


class ProtocolError(Exception):
    """A connection error (RFC 9113 §5.4.1): answer GOAWAY(code) and close. `kind` names
    the abuse limit that tripped (the `kind` label of `sidecar_h2_abuse_total`), or ""
    for a plain protocol violation."""

    def __init__(self, code: int, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


def header(length: int, ftype: int, flags: int, stream_id: int) -> bytes:
    return HEADER.pack(length >> 16, length & 0xFFFF, ftype, flags, stream_id)


def settings(values: dict[int, int]) -> bytes:
    body = b"".join([_SETTING.pack(k, v) for k, v in values.items()])
    return header(len(body), SETTINGS, 0, 0) + body


SETTINGS_ACK = header(0, SETTINGS, ACK, 0)


def ping(opaque: bytes, ack: bool = False) -> bytes:
    return header(8, PING, ACK if ack else 0, 0) + opaque


def window_update(stream_id: int, increment: int) -> bytes:
    return header(4, WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


def rst_stream(stream_id: int, code: int) -> bytes:
    return header(4, RST_STREAM, 0, stream_id) + _U32.pack(code)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return header(8 + len(debug), GOAWAY, 0, 0) + _U32X2.pack(last_stream_id, code) + debug


def headers(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """HEADERS plus as many CONTINUATION frames as `block` needs at the peer's frame size."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return header(len(block), HEADERS, flags | END_HEADERS, stream_id) + block
    parts = [header(max_frame, HEADERS, flags, stream_id), block[:max_frame]]
    pos = max_frame
    while pos < len(block):
        chunk = block[pos : pos + max_frame]
        pos += len(chunk)
        last = END_HEADERS if pos >= len(block) else 0
        parts += [header(len(chunk), CONTINUATION, last, stream_id), chunk]
    return b"".join(parts)


def unpack_u32(data: bytes, pos: int) -> int:
    value: int = _U32.unpack_from(data, pos)[0]
    return value


def unpack_u32x2(data: bytes, pos: int) -> tuple[int, int]:
    a, b = _U32X2.unpack_from(data, pos)
    return a, b


def unpack_setting(data: bytes, pos: int) -> tuple[int, int]:
    k, v = _SETTING.unpack_from(data, pos)
    return k, v
