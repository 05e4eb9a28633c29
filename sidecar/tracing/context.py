"""A call's W3C trace context (https://www.w3.org/TR/trace-context/): read from the
caller's `traceparent`, or started here; passed upstream with this hop's span as parent.

Pure (no I/O). This is the only tracing code a relayed call runs on the request path
(sidecar/h2relay/call.py): no OpenTelemetry object is made here. A call keeps the ids as
hex bytes, the timestamps it already has (`Call.started`, `Attempt.started` and
`Attempt.finished`, monotonic), and its attempts; sidecar/tracing/spans.py builds the
spans from them after the call ended, and only for calls that are sampled or failed.

Sampling is parent-based: a caller's sampled flag is followed; a trace started here is
sampled with the tracer's ratio (`bound`). Failed calls are exported whatever the flag (export.py decides).
"""

from __future__ import annotations

import os
import random
from typing import Any

TRACEPARENT = b"traceparent"
# the traceparent field as hpack_codec.encode_literal writes it: literal without indexing,
# literal name, then the value's length (55 for version 00: one byte, no Huffman)
_FIELD = b"\x00\x0btraceparent\x37"
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_HEX_DASH = b"0123456789abcdef-"
_LOW64 = (1 << 64) - 1
# ids need to be unique, not secret (W3C trace context §3.2.2.3: "randomly generated");
# a seeded Mersenne twister costs a fraction of os.urandom's microsecond per id
_rng = random.Random(int.from_bytes(os.urandom(16), "big"))


def new_span_id() -> bytes:
    return b"%016x" % (_rng.getrandbits(64) or 1)


def bound(ratio: float) -> int:
    """The sampling threshold for `begin`: a new trace is sampled when the low 64 bits
    of its random trace id fall below it (as OpenTelemetry's TraceIdRatioBased)."""
    return int(ratio * (1 << 64))


class CallTrace:
    """One relayed call's place in its trace: the trace, its parent's span, the flag.
    The call's own span id is made only when its spans are built (spans.py), since
    nothing on the wire carries it: upstream, each attempt's span is the parent."""

    __slots__ = ("attempts", "parent_id", "sampled", "span_id", "trace_id")

    def __init__(self, trace_id: bytes, parent_id: bytes | None, sampled: bool) -> None:
        self.trace_id = trace_id  # 32 lower-case hex digits
        self.parent_id = parent_id  # the caller's span (16 hex digits), None for a root
        self.sampled = sampled
        self.span_id = b""  # this call's span (server span inbound, client outbound)
        self.attempts: list[Any] = []  # the call's Attempts (attempt.py), in order

    def upstream(self, span_id: bytes) -> bytes:
        """The traceparent an attempt sends upstream: its own span as the parent."""
        return b"00-%s-%s-%s" % (self.trace_id, span_id, b"01" if self.sampled else b"00")

    def upstream_field(self, span_id: bytes) -> bytes:
        """`upstream(span_id)` as an encoded header field, to append to a header block."""
        return b"%s00-%s-%s-%s" % (
            _FIELD,
            self.trace_id,
            span_id,
            b"01" if self.sampled else b"00",
        )

    def __repr__(self) -> str:
        return f"CallTrace({self.trace_id.decode()} sampled={self.sampled})"


def begin(traceparent: bytes | None, threshold: int) -> CallTrace:
    """The call's trace: the caller's when its traceparent is valid, else a new one,
    sampled by `threshold` (`bound(ratio)`)."""
    if traceparent is not None:
        parsed = parse(traceparent)
        if parsed is not None:
            return CallTrace(parsed[0], parsed[1], parsed[2])
    bits: int = _rng.getrandbits(128) or 1
    return CallTrace(b"%032x" % bits, None, (bits & _LOW64) < threshold)


def parse(value: bytes) -> tuple[bytes, bytes, bool] | None:
    """(trace id, parent span id, sampled) of a traceparent, None when it is invalid
    (W3C trace context §3.2: lower-case hex only; version 00 is exactly 55 characters; a
    higher version may be longer, its first four fields read alike; version ff is
    invalid; an all-zero trace or parent id is invalid)."""
    value = value.strip()
    n = len(value)
    if n < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    if value[:55].translate(None, _HEX_DASH) != b"" or value[:55].count(b"-") != 3:
        return None
    version = value[:2]
    if version == b"ff" or (version == b"00" and n != 55) or (n > 55 and value[55:56] != b"-"):
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, bool(int(value[53:55], 16) & 1)
