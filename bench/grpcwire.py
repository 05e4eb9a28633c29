"""The bytes on the wire: a pre-encoded gRPC request, and reading `nghttp -v` output.

Pure, no I/O. h2load sends one fixed body, so the request is encoded once by hand
(5-byte gRPC frame header, then a protobuf `meshtest.echo.v1.EchoRequest`); a unit
test checks it against the generated stubs so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ECHO_UNARY_PATH = "/meshtest.echo.v1.Echo/Unary"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def echo_request(payload_size: int = 100, delay_ms: int = 0) -> bytes:
    """A serialized EchoRequest: `payload` (field 1) and, if set, `delay_ms` (field 2)."""
    payload = bytes(b"meshtest-bench-"[i % 15] for i in range(payload_size))
    msg = b"\x0a" + _varint(len(payload)) + payload if payload else b""  # proto3 omits defaults
    if delay_ms:
        msg += b"\x10" + _varint(delay_ms)
    return msg


def grpc_frame(message: bytes) -> bytes:
    """Length-prefixed message: compressed flag 0, 4-byte big-endian length, message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


@dataclass(frozen=True)
class SpotCheck:
    """One request seen by `nghttp -v`: HTTP status, gRPC status, response DATA bytes."""

    http_status: int | None
    grpc_status: int | None
    grpc_message: str
    data_bytes: int

    @property
    def ok(self) -> bool:
        return self.http_status == 200 and self.grpc_status == 0


_HEADER = re.compile(r"recv \(stream_id=(\d+)\) ([^:]+|:[a-z]+): (.*)$")
_DATA = re.compile(r"recv DATA frame <length=(\d+), flags=0x[0-9a-f]+, stream_id=(\d+)>")


def parse_nghttp_verbose(text: str) -> SpotCheck:
    """Read the first request's status, trailers and DATA length from `nghttp -v` output.

    nghttp writes the response body to stdout between its frame log lines, without a
    newline, so lines are searched rather than matched from their start.
    """
    http_status: int | None = None
    grpc_status: int | None = None
    grpc_message = ""
    data = 0
    for line in text.splitlines():
        if m := _DATA.search(line):
            data += int(m.group(1))
            continue
        if m := _HEADER.search(line):
            name, value = m.group(2).strip().lower(), m.group(3).strip()
            if name == ":status":
                http_status = int(value)
            elif name == "grpc-status":
                grpc_status = int(value)
            elif name == "grpc-message":
                grpc_message = value
    return SpotCheck(http_status, grpc_status, grpc_message, data)
