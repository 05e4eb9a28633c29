"""A relayed Call retries only a request it still holds whole (sidecar/h2relay/replay.py,
call.py step 8): one larger than the replay buffer is not retried, whether it passed
the limit while held (no stream open yet) or while streaming on; one within it is
replayed byte for byte. No socket, no sleep (sidecar/testing)."""

from __future__ import annotations

from sidecar.config import Retries
from sidecar.h2relay.grpc_client import frame
from sidecar.testing import FakeClock, GoAway, Reply

from .call_rig import error, on_fake_clock, rig

RETRY = Retries(max_attempts=3, backoff_base_ms=10, backoff_max_ms=10)


@on_fake_clock
async def test_a_request_larger_than_the_replay_buffer_is_not_retried(clock: FakeClock) -> None:
    """A 100-byte message over a 64-byte buffer: the upstream's UNAVAILABLE is the
    caller's answer, and one stream was all the upstream saw."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", message="once"),
        Reply(),
        endpoints=2,
        retries=RETRY,
        retry_buffer=64,
    )
    call = r.call(b"x" * 100)
    await clock.advance(1.0)
    answer = call.ended.result()
    assert (answer.code, answer.details) == ("UNAVAILABLE", "once")
    assert [len(m) for s in r.upstream.streams for m in s.messages()] == [100]


@on_fake_clock
async def test_a_request_within_the_buffer_is_replayed_whole(clock: FakeClock) -> None:
    """A 50-byte message within a 64-byte buffer: the retry carries the same bytes."""
    r = rig(
        clock,
        Reply("UNAVAILABLE"),
        Reply(messages=[b"ok"]),
        endpoints=2,
        retries=RETRY,
        retry_buffer=64,
    )
    request = bytes(range(50))
    call = r.call(request)
    await clock.advance(0.01)
    assert call.ended.result().response == b"ok"
    first, second = r.upstream.streams
    assert first.body == second.body == frame(request)


@on_fake_clock
async def test_a_stream_passing_the_buffer_while_sent_is_not_retried(clock: FakeClock) -> None:
    """A client stream: 40 bytes go upstream (kept for a replay), then 40 more pass the
    64-byte buffer, so the copy goes; the upstream's error after the request is whole
    is final."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", message="after the stream"),
        Reply(),
        endpoints=2,
        retries=RETRY,
        retry_buffer=64,
    )
    call = r.call(b"a" * 35, end=False)  # 40 bytes framed
    await clock.settle()
    assert len(r.upstream.streams) == 1  # the attempt is open and has them
    call.send(frame(b"b" * 35), True)
    await clock.advance(1.0)
    answer = call.ended.result()
    assert (answer.code, answer.details) == ("UNAVAILABLE", "after the stream")
    assert len(r.upstream.streams) == 1
    assert r.upstream.streams[0].messages() == [b"a" * 35, b"b" * 35]


@on_fake_clock
async def test_a_stream_within_the_buffer_is_retried_with_every_message(
    clock: FakeClock,
) -> None:
    """Two 20-byte messages, sent one by one, stay within the buffer: the retry after
    the upstream's UNAVAILABLE replays both, in order."""
    r = rig(
        clock,
        Reply("UNAVAILABLE"),
        Reply(messages=[b"done"]),
        endpoints=2,
        retries=RETRY,
        retry_buffer=64,
    )
    call = r.call(b"1" * 15, end=False)
    await clock.settle()
    call.send(frame(b"2" * 15), True)
    await clock.advance(0.01)
    assert call.ended.result().response == b"done"
    first, second = r.upstream.streams
    assert first.messages() == second.messages() == [b"1" * 15, b"2" * 15]


@on_fake_clock
async def test_a_refused_stream_is_not_replayed_once_the_copy_is_gone(clock: FakeClock) -> None:
    """GOAWAY after the whole 100-byte request went up (past the 64-byte buffer): a
    refused stream is safe to replay, but nothing is left to replay it with, so the
    caller gets connection_lost rather than a retry with a truncated request."""
    r = rig(
        clock,
        GoAway(on="end"),
        Reply(),
        endpoints=2,
        retries=RETRY,
        retry_buffer=64,
    )
    call = r.call(b"x" * 100)
    await clock.advance(1.0)
    answer = call.ended.result()
    assert (answer.code, error(answer)) == ("UNAVAILABLE", "connection_lost")
    assert len(r.upstream.streams) == 1
