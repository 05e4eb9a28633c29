"""gRPC over HTTP/2, the parts a relay reads and writes (gRPC's PROTOCOL-HTTP2.md).

Pure (no I/O): `grpc-timeout` both ways, status codes, percent-encoded messages, the
trailers-only response a sidecar-made error is sent as, and a length-prefix tracker
that enforces the message-size limit on DATA as it streams past, never buffering it.
"""

from __future__ import annotations

import urllib.parse

from sidecar.h2relay.hpack_codec import encode_field
from sidecar.outcome import SIDECAR_ERROR_KEY

STATUS_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
# bytes value of grpc-status -> status name, for the trailers the relay reads
STATUS_BY_WIRE = {str(v).encode(): k for k, v in STATUS_CODES.items()}

# RST_STREAM code -> the status a gRPC client reports (PROTOCOL-HTTP2.md, "Errors").
STATUS_FOR_RST = {
    0x0: "INTERNAL",
    0x1: "INTERNAL",
    0x2: "INTERNAL",
    0x3: "INTERNAL",
    0x7: "UNAVAILABLE",
    0x8: "CANCELLED",
    0xB: "RESOURCE_EXHAUSTED",
}

_UNITS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}


def parse_timeout(value: bytes) -> float | None:
    """`grpc-timeout` in seconds (`1S`, `250m`, ...), or None if malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _UNITS.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit


def encode_timeout(seconds: float) -> bytes:
    """The remaining time, rounded up, in the finest unit that fits 8 digits."""
    micros = max(1, int(seconds * 1e6 + 0.999))
    if micros < 100_000_000:
        return b"%du" % micros
    millis = (micros + 999) // 1000
    if millis < 100_000_000:
        return b"%dm" % millis
    return b"%dS" % min(99_999_999, (millis + 999) // 1000)


def percent_encode(message: str) -> bytes:
    """grpc-message encoding: percent-encode outside printable ASCII (and `%`)."""
    return urllib.parse.quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()


def trailers_only(
    status: str, message: str, reason: str | None, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """An encoded HEADERS block answering a call with just a status (a sidecar error)."""
    fields = [
        encode_field(b":status", b"200"),
        encode_field(b"content-type", b"application/grpc"),
        encode_field(b"grpc-status", str(STATUS_CODES[status]).encode()),
        encode_field(b"grpc-message", percent_encode(message)),
    ]
    if reason is not None:
        fields.append(encode_field(SIDECAR_ERROR_KEY.encode(), reason.encode()))
    fields += [encode_field(k.encode(), v.encode()) for k, v in extra]
    return b"".join(fields)


def status_trailers(status: str, message: str, reason: str | None) -> bytes:
    """Trailers (after response headers were sent) for a sidecar-made error."""
    fields = [
        encode_field(b"grpc-status", str(STATUS_CODES[status]).encode()),
        encode_field(b"grpc-message", percent_encode(message)),
    ]
    if reason is not None:
        fields.append(encode_field(SIDECAR_ERROR_KEY.encode(), reason.encode()))
    return b"".join(fields)


class MessageLimit:
    """Walks gRPC length prefixes (1 flag byte + 4 length bytes) across DATA frames.

    `feed` returns False once a message longer than `limit` is announced, so the relay
    can refuse it before the body has streamed through."""

    __slots__ = ("_prefix", "_skip", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._skip = 0  # body bytes of the current message still to pass
        self._prefix = b""  # a prefix split across frames

    def feed(self, data: bytes | memoryview) -> bool:
        end = len(data)
        if not self._skip and not self._prefix and end >= 5:
            # the common case: a frame starting at a message boundary holding one whole message
            length = int.from_bytes(data[1:5], "big")
            if length > self.limit:
                return False
            if length == end - 5:
                return True
        pos = 0
        while True:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            if pos >= end:
                return True
            need = 5 - len(self._prefix)
            chunk = bytes(data[pos : pos + need])
            pos += len(chunk)
            if len(chunk) < need:
                self._prefix += chunk
                return True
            prefix = self._prefix + chunk if self._prefix else chunk
            self._prefix = b""
            length = int.from_bytes(prefix[1:5], "big")
            if length > self.limit:
                return False
            self._skip = length
