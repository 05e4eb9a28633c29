"""A caller's RST_STREAM ends its relayed Call (sidecar/h2relay/call.py step 9) on fake
time: the upstream's stream gets RST_STREAM(CANCEL) in the same turn, whether the
answer had begun or not; a call cancelled while backing off or waiting for its
connection sends nothing more. No socket, no sleep (sidecar/testing)."""

from __future__ import annotations

from sidecar.config import Retries
from sidecar.h2relay import frames as F
from sidecar.testing import FakeClock, Hang, Reply

from .call_rig import ADDRESSES, at, on_fake_clock, rig


@on_fake_clock
async def test_a_caller_cancel_resets_the_upstream_stream_at_once(clock: FakeClock) -> None:
    """Cancelled at 30 ms while the upstream thinks: RST_STREAM(CANCEL) upstream at
    30 ms, the call forgotten on both connections, no retry though retries are on."""
    r = rig(clock, Hang(), Reply(), endpoints=2, retries=Retries(max_attempts=3))
    t0 = r.t
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.03)
    stream = r.upstream.streams[0]
    assert stream.reset is None
    call.cancel()
    await clock.settle()
    assert stream.reset == F.CANCEL
    assert stream.reset_at is not None and at(stream.reset_at, t0 + 0.03)
    assert not r.caller.server.calls
    assert all(not up.calls for conns in r.pool.conns.values() for up in conns)
    await clock.advance(2.0)
    assert len(r.upstream.streams) == 1


@on_fake_clock
async def test_a_cancel_after_the_answer_began_resets_the_upstream(clock: FakeClock) -> None:
    """Response headers and a message relayed, trailers still to come: the caller's
    cancel reaches the upstream as RST_STREAM(CANCEL)."""
    r = rig(clock, Reply(messages=[b"part"], finish=False))
    call = r.call(b"x", unary=False)
    await clock.settle()
    assert call.headers is not None and call.take() == b"part"
    call.cancel()
    await clock.settle()
    assert r.upstream.streams[0].reset == F.CANCEL
    assert not r.caller.server.calls


@on_fake_clock
async def test_a_cancel_during_the_backoff_sends_no_retry(clock: FakeClock) -> None:
    """UNAVAILABLE, then a 100 ms backoff; cancelled at 50 ms: the retry never goes."""
    r = rig(
        clock,
        Reply("UNAVAILABLE"),
        Reply(),
        endpoints=2,
        retries=Retries(max_attempts=3, backoff_base_ms=100, backoff_max_ms=100),
    )
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.05)
    call.cancel()
    await clock.advance(1.0)
    assert len(r.upstream.streams) == 1
    assert not r.caller.server.calls


@on_fake_clock
async def test_a_cancel_while_connecting_opens_no_stream(clock: FakeClock) -> None:
    """The endpoint's connection never completes (a black hole): the caller cancels at
    20 ms, and when the pool's 5 s connect timeout passes nothing was sent anywhere."""
    r = rig(clock, Reply())
    clock.network.black_hole(ADDRESSES[0])
    call = r.call(b"x")
    await clock.advance(0.02)
    call.cancel()
    await clock.advance(6.0)
    assert r.upstream.streams == []
    assert clock.network.connects == [ADDRESSES[0]]
    assert not r.caller.server.calls
