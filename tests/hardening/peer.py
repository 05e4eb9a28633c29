"""A raw HTTP/2 peer over a blocking loopback socket, for attacks the real clients never
send: frames built with sidecar/h2relay/frames.py and HPACK with hpack_codec.encode."""

from __future__ import annotations

import contextlib
import socket
import time

from sidecar.h2relay import frames as F
from sidecar.h2relay.hpack_codec import encode

ECHO_UNARY = "/meshtest.echo.v1.Echo/Unary"


def request_block(path: str = ECHO_UNARY, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    return encode(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"echo"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *(extra or []),
        ]
    )


Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


class RawPeer:
    def __init__(self, port: int, *, rcvbuf: int = 0, timeout: float = 5.0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        self.sock = sock
        self.buf = b""
        self.eof = False
        self.frames: list[Frame] = []

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> bool:
        """False once the sidecar closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def start(self) -> bool:
        return self.send(F.PREFACE + F.settings({}))

    def _read(self, timeout: float) -> bool:
        """Read what arrives within `timeout`; False at EOF (or reset)."""
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        while len(self.buf) >= 9:
            hi, lo, ftype, flags, sid = F.HEADER.unpack_from(self.buf, 0)
            length = (hi << 16) | lo
            if len(self.buf) < 9 + length:
                break
            self.frames.append((ftype, flags, sid & 0x7FFFFFFF, self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
        return True

    def goaway(self, timeout: float = 10.0) -> tuple[int, int, bytes] | None:
        """(last stream id, error code, debug data) of the GOAWAY the sidecar sent, read
        for up to `timeout`; None if the connection ended (or the time ran out) without."""
        end = time.monotonic() + timeout
        while True:
            found = self._goaway()
            left = end - time.monotonic()
            if found is not None or left <= 0 or not self._read(min(left, 0.5)):
                return found if found is not None else self._goaway()

    def _goaway(self) -> tuple[int, int, bytes] | None:
        for ftype, _, _, payload in self.frames:
            if ftype == F.GOAWAY:
                last, code = F.unpack_u32x2(payload, 0)
                return last, code, payload[8:]
        return None

    def closed_within(self, timeout: float) -> bool:
        """The sidecar closed the connection within `timeout` (frames read meanwhile)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self._read(min(0.5, end - time.monotonic())):
                return True
        return self.eof

    def resets(self) -> list[tuple[int, int]]:
        return [(sid, F.unpack_u32(p, 0)) for t, _, sid, p in self.frames if t == F.RST_STREAM]
