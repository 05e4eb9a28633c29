"""Each abuse limit of the sans-IO connection and the HPACK decoder at its threshold:
one frame under it is served, one over it is a connection error of the named kind; and
the listener config that sets them, refused with the key when invalid."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from sidecar.config import ConfigError, parse_config
from sidecar.h2relay import frames as F
from sidecar.h2relay.connection import H2Connection, Settings
from sidecar.h2relay.hpack_codec import Decoder, encode
from sidecar.h2relay.listeners import listener_settings
from tests.hardening.peer import request_block
from tests.unit.test_h2relay_conformance import Recorder, frames_out, server


def calm(conn: H2Connection, data: bytes) -> str:
    """The kind of the ENHANCE_YOUR_CALM connection error `data` causes."""
    with pytest.raises(F.ProtocolError) as err:
        conn.receive(data)
    assert err.value.code == F.ENHANCE_YOUR_CALM, err.value
    return err.value.kind


def test_continuation_frames_bounded() -> None:
    """8 CONTINUATION frames make a block; a 9th is a continuation_flood."""
    block = request_block()
    conn, rec = server()
    frames = F.header(1, F.HEADERS, 0, 1) + block[:1]
    frames += b"".join(F.header(1, F.CONTINUATION, 0, 1) + block[i : i + 1] for i in range(1, 8))
    conn.receive(frames + F.header(len(block) - 8, F.CONTINUATION, F.END_HEADERS, 1) + block[8:])
    assert rec.events[0][0] == "headers"
    conn, _ = server()
    frames = F.header(1, F.HEADERS, 0, 1) + block[:1]
    frames += b"".join(F.header(1, F.CONTINUATION, 0, 1) + block[i : i + 1] for i in range(1, 10))
    assert calm(conn, frames) == "continuation_flood"


def test_header_block_bytes_bounded_before_decoding() -> None:
    """A block up to SETTINGS_MAX_HEADER_LIST_SIZE bytes is decoded; one byte more ends
    the connection before any decoding (header_too_large)."""
    conn, _ = server(max_header_list=4096)
    first = F.header(3000, F.HEADERS, 0, 1) + b"\x82" * 3000
    conn.receive(first + F.header(1096, F.CONTINUATION, 0, 1) + b"\x82" * 1096)
    assert calm(conn, F.header(1, F.CONTINUATION, 0, 1) + b"\x82") == "header_too_large"
    conn, _ = server(max_header_list=4096)
    assert calm(conn, F.header(4097, F.HEADERS, F.END_HEADERS, 1) + b"\x82" * 4097) == (
        "header_too_large"
    )


def test_hpack_bomb_bounded_while_decoding() -> None:
    """Fields past the limit are not kept (the table still follows the peer), and a
    block decoding to over 4x the limit ends the connection (hpack_bomb)."""
    decoder = Decoder()
    decoder.max_list = 16 * 1024
    big = b"\x40\x05x-big\x7f" + bytes([(3873 & 0x7F) | 0x80, 3873 >> 7]) + b"v" * 4000
    block = decoder.decode(big + b"\xbe" * 3000)
    assert block.size > 3000 * 4000 and len(block.headers) <= 4
    assert decoder.decode(b"\xbe").headers == ((b"x-big", b"v" * 4000),)  # still in sync
    conn, _ = server()
    assert calm(conn, F.headers(1, request_block() + big + b"\xbe" * 100, True, 16384)) == (
        "hpack_bomb"
    )


def test_empty_frames_bounded() -> None:
    """One empty DATA frame is tolerated, a second in a row is not (Envoy's default)."""
    conn, _ = server()
    conn.receive(F.headers(1, request_block(), False, 16384) + F.header(0, F.DATA, 0, 1))
    conn.receive(F.header(1, F.DATA, 0, 1) + b"x" + F.header(0, F.DATA, 0, 1))  # run reset
    assert calm(conn, F.header(0, F.DATA, 0, 1)) == "empty_frames"


def test_priority_bounded_per_stream() -> None:
    """100 PRIORITY frames per stream opened (plus the connection's 100)."""
    conn, _ = server()
    prio = F.header(5, F.PRIORITY, 0, 1) + b"\0\0\0\0\x10"
    conn.receive(F.headers(1, request_block(), False, 16384) + prio * 200)
    assert calm(conn, prio) == "control_flood"


def test_window_updates_bounded_per_data_frame_sent() -> None:
    """Envoy's bound: 5 + 2 x (streams opened + 10 x DATA frames we sent)."""
    conn, _ = server()
    conn.receive(F.headers(1, request_block(), False, 16384) + F.window_update(1, 1) * 7)
    conn.send_data(1, b"hello", False)  # now 5 + 2 x (1 + 10) = 27
    conn.receive(F.window_update(0, 1) * 20)
    assert calm(conn, F.window_update(1, 1)) == "control_flood"


@pytest.mark.parametrize(
    "frame",
    [F.ping(b"12345678"), F.settings({}), F.header(1, 0xFA, 0, 0) + b"x", F.rst_stream(1, 8)],
    ids=["ping", "settings", "unknown", "rst_closed"],
)
def test_control_frames_budget_per_second(frame: bytes) -> None:
    """Frames that ask no work: `max_control_per_s` of them until the I/O layer zeroes
    the count (every second), then control_flood."""
    conn, _ = server(max_control_per_s=50)
    conn.receive(F.headers(1, request_block(), True, 16384))
    conn.reset(1, F.CANCEL)  # stream 1 is closed: RST_STREAM on it does nothing
    conn.control_frames = 0
    conn.receive(frame * 50)
    conn.control_frames = 0  # a new second
    conn.receive(frame * 50)
    assert calm(conn, frame) == "control_flood"


def test_control_out_counts_our_answers() -> None:
    """The ACKs and resets we queue are counted for the I/O layer's outbound bound."""
    conn, _ = server()
    conn.control_out = 0
    conn.receive(F.ping(b"12345678") * 3 + F.settings({}))
    assert conn.control_out == 4


def test_client_role_is_not_limited() -> None:
    """An endpoint's connection (ours, client role) is not held to the caller limits."""
    conn = H2Connection(Recorder(), client=True, settings=Settings(max_control_per_s=1))
    conn.take()
    conn.receive(F.settings({}) + F.ping(b"12345678") * 10)
    assert len(frames_out(conn.take())) == 11


def test_reset_before_sent_withdraws_headers() -> None:
    """A stream of ours reset while its HEADERS are still queued never reaches the peer
    (no HEADERS, no RST_STREAM); once they were taken, the reset is a RST_STREAM."""
    conn = H2Connection(Recorder(), client=True)
    conn.take()
    sid = conn.open_stream()
    conn.send_headers(sid, encode([(b":path", b"/x")]), False)
    conn.reset(sid, F.CANCEL)
    assert conn.take() == b""
    sid = conn.open_stream()
    conn.send_headers(sid, encode([(b":path", b"/x")]), False)
    assert frames_out(conn.take())[0][0] == F.HEADERS
    conn.reset(sid, F.CANCEL)
    assert frames_out(conn.take()) == [(F.RST_STREAM, 0, sid, b"\0\0\0\x08")]
    sid = conn.open_stream()  # DATA queued after the HEADERS: a real reset
    conn.send_headers(sid, encode([(b":path", b"/x")]), False)
    conn.send_data(sid, b"abc", False)
    conn.reset(sid, F.CANCEL)
    assert [f[0] for f in frames_out(conn.take())] == [F.HEADERS, F.DATA, F.RST_STREAM]


def _listener(http2: dict[str, Any]) -> dict[str, Any]:
    return {"outbound": {"http2": http2}}


def test_config_keys_reach_the_settings() -> None:
    config = parse_config(
        _listener(
            {
                "max_header_list_size": 8192,
                "premature_reset_total_stream_count": 100,
                "max_buffered_bytes": 1 << 20,
            }
        )
    )
    assert config.outbound is not None
    settings = listener_settings(config.outbound.http2)
    assert settings.max_header_list == 8192 and settings.premature_reset_streams == 100
    assert settings.max_buffered == 1 << 20
    default = listener_settings(parse_config(_listener({})).outbound.http2)  # type: ignore[union-attr]
    assert (default.max_header_list, default.max_continuation_frames) == (16384, 8)
    assert default.idle_timeout_s == 3600 and default.max_connections == 1024


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_header_list_size", 100),
        ("max_continuation_frames", 0),
        ("max_outbound_control_frames", -1),
        ("preface_timeout_s", 0),
        ("max_connections", 0),
        ("max_buffered_bytes", 1000),
        ("no_such_limit", 1),
    ],
)
def test_invalid_limits_refused_with_their_key(key: str, value: int) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_listener({key: value}))
    assert err.value.key == f"outbound.http2.{key}"


def test_sidecar_check_names_the_key(tmp_path: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("inbound:\n  http2:\n    max_connections: 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "inbound.http2.max_connections" in done.stdout + done.stderr


def test_tiny_data_frames_bounded_per_stream() -> None:
    """100 DATA frames under 5 bytes are a stream's credit, each larger frame earns one
    back; the next tiny one resets that stream only (ENHANCE_YOUR_CALM), and the handler
    hears of it with the abuse kind set."""
    conn, rec = server()
    kinds: list[str] = []
    on_reset = rec.on_reset

    def record(sid: int, code: int) -> None:
        kinds.append(conn.stream_abuse)
        on_reset(sid, code)

    rec.on_reset = record  # type: ignore[method-assign]
    tiny = F.header(1, F.DATA, 0, 1) + b"x"
    conn.receive(F.headers(1, request_block(), False, 16384) + tiny * 100)
    conn.receive(F.header(5, F.DATA, 0, 1) + b"x" * 5 + tiny)  # one earned, one spent
    assert [e for e in rec.events if e[0] == "reset"] == []
    conn.take()
    conn.receive(tiny)
    assert ("reset", 1, F.ENHANCE_YOUR_CALM) in rec.events and kinds == ["tiny_data"]
    assert conn.stream_abuse == ""
    sent = frames_out(conn.take())
    assert [(t, F.unpack_u32(p, 0)) for t, _, _, p in sent if t == F.RST_STREAM] == [
        (F.RST_STREAM, F.ENHANCE_YOUR_CALM)
    ]
    conn.receive(tiny * 10)  # after our reset: ignored, the connection kept
    conn.receive(F.headers(3, request_block(), True, 16384))
    assert rec.events[-1][:2] == ("headers", 3)


def test_closed_streams_remembered_are_bounded() -> None:
    """A connection remembers how its newest 512 closed streams closed, no more."""
    conn, _ = server()
    for sid in range(1, 2 * 600, 2):
        conn.receive(F.headers(sid, request_block(), False, 16384) + F.rst_stream(sid, F.CANCEL))
        conn.control_frames = 0
    assert len(conn.closed_ids) == 512
    assert min(conn.closed_ids) == 2 * 600 - 1 - 2 * 511
