"""Hypothesis fuzz targets for the relay's wire code: the HTTP/2 frame parser, the HPACK
decoder and gRPC message framing. Each input either works or is refused with the
module's own error (ProtocolError, HpackError), never another exception, and the limits
hold on any input.

A short run in `make test` (FUZZ_EXAMPLES, default 200 inputs a target); `make fuzz`
runs 20,000. A failure Hypothesis finds is kept in its example database and replayed
first; one worth keeping for good becomes an `@example` here.
"""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.h2relay import frames as F
from sidecar.h2relay.connection import H2Connection, Settings
from sidecar.h2relay.grpcwire import MessageLimit
from sidecar.h2relay.hpack_codec import Decoder, HpackError, encode
from tests.unit.test_h2relay_conformance import Recorder

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

frame = st.builds(
    lambda t, flags, sid, payload: F.header(len(payload), t, flags, sid) + payload,
    st.sampled_from([*range(10), 0xFA]),  # every frame type, and an unknown one
    st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0x2D]),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),
    st.binary(max_size=64),
)


def _server(**limits: int) -> H2Connection:
    conn = H2Connection(Recorder(), client=False, settings=Settings(**limits))
    conn.receive(F.PREFACE + F.settings({}))
    conn.take()
    return conn


@fuzz
@given(st.lists(frame, max_size=40), st.integers(1, 50))
@example([F.header(0, F.CONTINUATION, 0, 1)] * 3, 7)
def test_frame_parser_refuses_only_with_protocol_error(frames: list[bytes], cut: int) -> None:
    """Any frame sequence, split at any byte: handled, or a ProtocolError."""
    conn = _server(max_control_per_s=20)
    data = b"".join(frames)
    try:
        for pos in range(0, len(data), cut):
            conn.receive(data[pos : pos + cut])
    except F.ProtocolError as exc:
        assert exc.code in range(0x0, 0xE)
    assert len(conn.streams) <= 40


@fuzz
@given(st.binary(max_size=300))
def test_frame_parser_on_raw_bytes(data: bytes) -> None:
    conn = _server()
    with contextlib.suppress(F.ProtocolError):
        conn.receive(data)


header = st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40))


@fuzz
@given(st.binary(max_size=200))
@example(b"\xbe" * 10)
@example(b"\x3f\xe1\x1f")  # a table size update above the limit
def test_hpack_decoder_refuses_only_with_hpack_error(data: bytes) -> None:
    decoder = Decoder()
    decoder.max_list = 1000
    try:
        block = decoder.decode(data)
    except HpackError:
        return
    kept = sum(len(n) + len(v) + 32 for n, v in block.headers)
    assert kept <= 1000  # fields past the limit are never kept


@fuzz
@given(st.lists(st.lists(header, max_size=8), max_size=5))
def test_hpack_round_trip(blocks: list[list[tuple[bytes, bytes]]]) -> None:
    """What our encoder writes, the decoder reads back, block after block."""
    decoder = Decoder()
    for fields in blocks:
        assert decoder.decode(encode(fields)).headers == tuple(fields)


@fuzz
@given(
    st.lists(st.integers(0, 300), max_size=10),
    st.lists(st.integers(1, 40), min_size=1, max_size=10),
    st.integers(0, 200),
)
def test_grpc_message_limit(lengths: list[int], cuts: list[int], limit: int) -> None:
    """Messages split anywhere across DATA frames: refused iff one is over the limit."""
    stream = b"".join(b"\0" + n.to_bytes(4, "big") + b"m" * n for n in lengths)
    check = MessageLimit(limit)
    ok = True
    pos = 0
    i = 0
    while pos < len(stream) and ok:
        step = cuts[i % len(cuts)]
        ok = check.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert ok == all(n <= limit for n in lengths)
