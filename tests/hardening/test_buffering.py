"""Data the sidecar would have to hold for a caller, bounded (each against both listeners of
a real sidecar, with its CPU and RSS measured; run with -s to see them):

- CVE-2019-9517 (internal data buffering): a caller that asks for large answers and never
  reads them, with a window as large as HTTP/2 allows (the answers are not held back by
  flow control, only by the socket), or never opening its window. Each stream holds at
  most a stream window; past `max_buffered_bytes` with none taken for `frame_timeout_s`
  the streams holding answers are reset (`unread_data`), and the pooled connection to
  the endpoint keeps serving other callers meanwhile.
- Request bodies trickled as 1-byte DATA frames: each costs a frame of the per-second
  control budget, so the CPU per byte is bounded, and a flood of them is `tiny_data`.

Every loop is bounded in count and time, on loopback only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from meshtest.echo.v1 import echo_pb2
from sidecar.h2relay import frames as F
from tests.hardening.harness import (
    LISTENERS,
    GoodCaller,
    MiB,
    abuse_count,
    measured,
    sidecar,
)
from tests.hardening.peer import RawPeer, request_block
from tests.integration.procs import ECHO, Proc, Sidecar, wait_until

pytestmark = pytest.mark.timeout(120)

BUFFERED = 8 * MiB  # max_buffered_bytes here
STREAMS = 8  # streams of unread answers
WINDOW = 4 * MiB  # the stream window the sidecar gives its endpoints (connection.Settings)


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory, echo_app: tuple[Proc, int]) -> Iterator[Sidecar]:
    http2 = {"max_buffered_bytes": BUFFERED, "frame_timeout_s": 2, "idle_timeout_s": 30}
    with sidecar(tmp_path_factory.mktemp("buffering"), echo_app[1], http2) as proc:
        yield proc


def _message(request: echo_pb2.EchoRequest) -> bytes:
    body = request.SerializeToString()
    return b"\0" + len(body).to_bytes(4, "big") + body


STREAM_PATH = f"/{ECHO}/ServerStream"
# each stream asks for 64 answers of 1 MiB: 64 MiB a stream, never read
BIG = _message(echo_pb2.EchoRequest(response_size=MiB, count=64))


def _ask(peer: RawPeer, streams: int) -> None:
    block = request_block(STREAM_PATH)
    for i in range(streams):
        sid = 1 + 2 * i
        frames = F.headers(sid, block, False, 16384) + F.header(len(BIG), F.DATA, F.END_STREAM, sid)
        assert peer.send(frames + BIG)


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("window", ["huge", "closed"])
def test_unread_answers_bounded(sc: Sidecar, listener: str, window: str) -> None:
    """8 streams of 64 MiB answers each (512 MiB) to a caller that never reads: with a
    window of 2^31-1 the socket is what holds them back, with a window of 0 flow control
    is. Either way each stream holds at most the stream window the sidecar gives its
    endpoint (4 MiB); once over max_buffered_bytes with nothing taken for frame_timeout_s
    (2 s here) the stuck streams are reset, and the good caller, whose calls share the
    pooled connection to the endpoint, is served throughout. Through the outbound
    listener the answers cross two hops of this sidecar, and the inbound listener (whose
    caller, the outbound's pooled connection, stops taking the stuck streams' answers
    too) may see the stall first: then it resets those streams there."""
    port = sc.port(listener)
    hops = ("inbound", "outbound") if listener == "outbound" else ("inbound",)

    def counted() -> float:
        return sum(abuse_count(sc, hop, "unread_data") for hop in hops)

    before = counted()
    settings = (
        {F.INITIAL_WINDOW_SIZE: 2**31 - 1} if window == "huge" else {F.INITIAL_WINDOW_SIZE: 0}
    )
    with (
        GoodCaller(port) as good,
        measured(sc.proc.pid, f"unread answers, {window} window, {listener}") as usage,
        RawPeer(port, rcvbuf=4096, timeout=2.0) as peer,
    ):
        peer.send(F.PREFACE + F.settings(settings))
        if window == "huge":
            peer.send(F.window_update(0, 2**31 - 1 - 65535))
        _ask(peer, STREAMS)
        wait_until(lambda: counted() > before, timeout=60, what="the unread answers counted")
        time.sleep(1.0)  # the good caller still served afterwards
    report = usage.report(1, "connection") + ", " + good.check(minimum=3)
    print(report)
    assert counted() - before >= 1
    # 512 MiB asked; held: a stream window per stream at each hop (two on the outbound
    # listener's path, both in this process), plus socket buffers
    assert usage.rss_growth < 2 * STREAMS * WINDOW + 48 * MiB, report


@pytest.mark.parametrize("listener", LISTENERS)
def test_slow_reader_within_bound_is_served(sc: Sidecar, listener: str) -> None:
    """A caller that reads its answers slowly but reads them: 8 MiB in 1 MiB answers,
    all of it arrives, no abuse counted."""
    port = sc.port(listener)
    before = abuse_count(sc, listener, "unread_data")
    body = _message(echo_pb2.EchoRequest(response_size=MiB, count=8))
    with RawPeer(port, rcvbuf=65536, timeout=5.0) as peer:
        peer.send(F.PREFACE + F.settings({F.INITIAL_WINDOW_SIZE: 2**31 - 1}))
        peer.send(F.window_update(0, 2**31 - 1 - 65535))
        block = request_block(STREAM_PATH)
        peer.send(F.headers(1, block, False, 16384) + F.header(len(body), F.DATA, F.END_STREAM, 1))
        peer.send(body)
        got = 0
        end = time.monotonic() + 60
        done = False
        while not done and time.monotonic() < end:
            time.sleep(0.005)  # a slow reader
            if not peer._read(0.5):
                break
            got += sum(len(p) for t, _, s, p in peer.frames if t == F.DATA and s == 1)
            done = any(t == F.HEADERS and s == 1 and f & F.END_STREAM for t, f, s, _ in peer.frames)
            peer.frames = [f for f in peer.frames if f[0] == F.HEADERS or f[0] == F.GOAWAY]
        assert done, f"{got} bytes read"
        assert got >= 8 * MiB
        assert peer.goaway(timeout=0) is None
    assert abuse_count(sc, listener, "unread_data") == before


def _read_for(peer: RawPeer, done: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end and peer._read(0.2):
        pass


@pytest.mark.parametrize("listener", LISTENERS)
def test_tiny_data_frames(sc: Sidecar, listener: str) -> None:
    """Request bodies in 1-byte DATA frames, as fast as the socket takes them, 4 streams
    a connection: each stream is reset with ENHANCE_YOUR_CALM after its 100 tiny frames
    of credit (the frames after that ignored), counted as tiny_data; the connection and
    the good caller are served; the CPU per frame sent is bounded. At most 50 attacker
    connections (200 streams): through the outbound listener each reset is relayed to the
    inbound listener as a cancellation on the pooled connection, which counts as a
    premature reset there (README, "not covered")."""
    port = sc.port(listener)
    before = abuse_count(sc, listener, "tiny_data")
    path = f"/{ECHO}/ClientStream"
    frames = 0
    streams = 0
    resets: list[tuple[int, int]] = []
    connections = 0
    with GoodCaller(port) as good, measured(sc.proc.pid, f"tiny DATA {listener}") as usage:
        start = time.monotonic()
        for _ in range(50):  # attacker connections, at most 3 s
            if connections and time.monotonic() - start > 3.0:
                break
            connections += 1
            with RawPeer(port) as peer:
                peer.start()
                for sid in (1, 3, 5, 7):
                    trickle = b"".join(F.header(1, F.DATA, 0, sid) + b"\0" for _ in range(500))
                    assert peer.send(F.headers(sid, request_block(path), False, 16384) + trickle)
                    frames += 500
                    streams += 1
                peer.send(F.ping(b"tinydata"))
                _read_for(peer, lambda: any(t == F.PING for t, *_ in peer.frames))
                assert any(t == F.PING for t, *_ in peer.frames), "connection not answering"
                assert peer.goaway(timeout=0) is None
                resets += peer.resets()
    report = usage.report(frames, "frames") + f" on {connections} connections"
    print(report)
    report += ", " + good.check(minimum=5)
    assert sorted(set(resets)) == [(sid, F.ENHANCE_YOUR_CALM) for sid in (1, 3, 5, 7)], resets
    assert len(resets) == streams
    assert abuse_count(sc, listener, "tiny_data") - before == streams
    assert usage.cpu / frames < 100e-6, report  # per 1-byte frame sent
    assert usage.rss_growth < 48 * MiB, report


@pytest.mark.parametrize("listener", LISTENERS)
def test_prefix_split_across_frames_is_served(sc: Sidecar, listener: str) -> None:
    """What a gRPC stack may send: 200 messages of a client stream, each split where a
    frame boundary falls inside its 5-byte prefix (a 2-byte frame, then the rest). Every
    tiny frame is followed by a larger one, so the stream keeps its credit: served whole."""
    port = sc.port(listener)
    before = abuse_count(sc, listener, "tiny_data")
    messages = [_message(echo_pb2.EchoRequest(payload=b"ab")) for _ in range(200)]
    with measured(sc.proc.pid, f"split prefixes {listener}") as usage, RawPeer(port) as peer:
        peer.start()
        out = F.headers(1, request_block(f"/{ECHO}/ClientStream"), False, 16384)
        for i, message in enumerate(messages):
            flags = F.END_STREAM if i == len(messages) - 1 else 0
            out += F.header(2, F.DATA, 0, 1) + message[:2]
            out += F.header(len(message) - 2, F.DATA, flags, 1) + message[2:]
        assert peer.send(out)
        _read_for(peer, lambda: any(t == F.HEADERS and s == 1 and f & F.END_STREAM
                                    for t, f, s, _ in peer.frames))  # fmt: skip
        data = b"".join(p for t, _, s, p in peer.frames if t == F.DATA and s == 1)
        assert peer.resets() == [] and peer.goaway(timeout=0) is None
    answer = echo_pb2.EchoResponse.FromString(data[5:])
    assert answer.received == len(messages), answer
    print(usage.report(2 * len(messages), "frames"))
    assert abuse_count(sc, listener, "tiny_data") == before
