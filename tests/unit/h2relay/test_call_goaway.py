"""Streams the upstream never processed (sidecar/h2relay/call.py step 8): past a GOAWAY's
last stream id, or refused with RST_STREAM(REFUSED_STREAM) (RFC 9113 §8.7), and
connections that fail before any byte: each is retried on another endpoint, or, with
no retry left, answered UNAVAILABLE with the sidecar's reason. No socket, no sleep
(sidecar/testing)."""

from __future__ import annotations

from sidecar.config import Retries
from sidecar.h2relay import frames as F
from sidecar.testing import FakeClock, GoAway, Reply, Reset

from .call_rig import ADDRESSES, at, error, on_fake_clock, rig

RETRY = Retries(max_attempts=2, backoff_base_ms=20, backoff_max_ms=20)


@on_fake_clock
async def test_a_stream_refused_by_goaway_is_retried_on_another_endpoint(
    clock: FakeClock,
) -> None:
    """GOAWAY naming an earlier stream as the last: ours was never processed, so the
    retry goes one backoff (20 ms) later to the other endpoint, and the refused stream
    is not reset by us (the peer already forgot it)."""
    r = rig(clock, GoAway(), Reply(messages=[b"elsewhere"]), endpoints=2, retries=RETRY)
    t0 = r.t
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.02)
    answer = call.ended.result()
    assert (answer.code, answer.response) == ("OK", b"elsewhere")
    refused, retried = r.upstream.streams
    assert refused.reset is None
    assert retried.address != refused.address
    assert at(retried.opened_at, t0 + 0.02)


@on_fake_clock
async def test_goaway_without_a_retry_left_is_connection_lost(clock: FakeClock) -> None:
    """One attempt only: the caller gets UNAVAILABLE, `x-sidecar-error:
    connection_lost`, saying the peer went away."""
    r = rig(clock, GoAway(), Reply())
    answer = await r.call(b"x").ended
    assert (answer.code, error(answer)) == ("UNAVAILABLE", "connection_lost")
    assert answer.details.endswith("at 10.0.0.1:50051: peer went away")


@on_fake_clock
async def test_goaway_closes_the_connection_to_new_calls(clock: FakeClock) -> None:
    """After GOAWAY the pool opens a new connection for the next call to the endpoint."""
    r = rig(clock, GoAway(), Reply(), Reply())
    await r.call(b"x").ended
    answer = await r.call(b"y").ended
    assert answer.code == "OK"
    assert [s.address for s in r.upstream.streams] == [ADDRESSES[0]] * 2
    assert len(r.upstream.connections) == 2
    assert clock.network.connects == [ADDRESSES[0]] * 2


@on_fake_clock
async def test_a_refused_stream_reset_is_retried(clock: FakeClock) -> None:
    """RST_STREAM(REFUSED_STREAM) before any answer: retried elsewhere."""
    r = rig(clock, Reset(F.REFUSED_STREAM), Reply(messages=[b"ok"]), endpoints=2, retries=RETRY)
    call = r.call(b"x")
    await clock.advance(0.02)
    assert call.ended.result().response == b"ok"
    assert len({s.address for s in r.upstream.streams}) == 2


@on_fake_clock
async def test_a_refused_connection_without_a_retry_is_connect_failed(clock: FakeClock) -> None:
    """The endpoint refuses the connection: UNAVAILABLE, `x-sidecar-error:
    connect_failed`, and the upstream saw nothing."""
    r = rig(clock, Reply())
    clock.network.refuse(ADDRESSES[0])
    answer = await r.call(b"x").ended
    assert (answer.code, error(answer)) == ("UNAVAILABLE", "connect_failed")
    assert r.upstream.streams == []


@on_fake_clock
async def test_a_refused_connection_is_retried_on_another_endpoint(clock: FakeClock) -> None:
    """One of two endpoints refuses connections (no app saw the request, so it is
    always safe to retry): every call is answered by the other one, those that tried
    the refusing endpoint first included."""
    r = rig(clock, *[Reply(messages=[b"ok"])] * 10, endpoints=2, retries=RETRY)
    clock.network.refuse(ADDRESSES[0])
    for _ in range(10):
        call = r.call(b"x")
        await clock.advance(0.02)
        assert call.ended.result().response == b"ok"
    assert ADDRESSES[0] in clock.network.connects  # some calls did try it first
    assert {s.address for s in r.upstream.streams} == {ADDRESSES[1]}
