"""A relayed Call's time (sidecar/h2relay/call.py step 2, deadline.py) on fake time: the
deadline ends the call with DEADLINE_EXCEEDED at its time (not before, at most one
wheel tick after) and resets the upstream stream; a per-try timeout ends one attempt,
retried when `retries.on` lists DEADLINE_EXCEEDED; the time left goes upstream as
`grpc-timeout`. No socket, no sleep (sidecar/testing)."""

from __future__ import annotations

from sidecar.config import Retries
from sidecar.h2relay import frames as F
from sidecar.h2relay.grpcwire import encode_timeout
from sidecar.testing import FakeClock, Hang, Reply, Reset

from .call_rig import at, by_tick, error, on_fake_clock, rig


@on_fake_clock
async def test_the_deadline_ends_the_call_at_its_time_and_resets_the_upstream(
    clock: FakeClock,
) -> None:
    """A 200 ms caller deadline over a hanging upstream: nothing at 199 ms; at 200 ms
    (to the tick) DEADLINE_EXCEEDED, `x-sidecar-error: timeout`, naming the endpoint,
    and the upstream's stream gets RST_STREAM(CANCEL) at the same time."""
    r = rig(clock, Hang())
    t0 = r.t
    call = r.call(b"x", timeout_s=0.2)
    await clock.advance(0.199)
    assert not call.ended.done()
    stream = r.upstream.streams[0]
    assert stream.reset is None
    assert stream.timeout == encode_timeout(0.2).decode()  # the budget, sent on
    await clock.advance(0.002)
    answer = call.ended.result()
    assert (answer.code, error(answer)) == ("DEADLINE_EXCEEDED", "timeout")
    assert "upstream t at 10.0.0.1:50051" in answer.details
    assert stream.reset == F.CANCEL
    assert stream.reset_at is not None and by_tick(stream.reset_at, t0 + 0.2)
    assert not r.caller.server.calls  # the call is over on the caller's connection


@on_fake_clock
async def test_the_route_timeout_bounds_a_call_without_a_deadline(clock: FakeClock) -> None:
    """No grpc-timeout from the caller: the route's timeout_ms (300) is the budget."""
    r = rig(clock, Hang(), timeout_ms=300)
    t0 = r.t
    call = r.call(b"x")
    await clock.advance(0.299)
    assert not call.ended.done()
    await clock.advance(0.002)
    assert call.ended.result().code == "DEADLINE_EXCEEDED"
    reset_at = r.upstream.streams[0].reset_at
    assert reset_at is not None and by_tick(reset_at, t0 + 0.3)


@on_fake_clock
async def test_a_per_try_timeout_retries_on_another_endpoint(clock: FakeClock) -> None:
    """per_try_timeout_ms 50 with DEADLINE_EXCEEDED retried: the first attempt is reset
    at 50 ms, the retry opens one 100 ms backoff later with a 50 ms grpc-timeout of its
    own, and its answer is the caller's."""
    r = rig(
        clock,
        Hang(),
        Reply(messages=[b"second"]),
        endpoints=2,
        per_try_timeout_ms=50,
        retries=Retries(
            max_attempts=2, on=["DEADLINE_EXCEEDED"], backoff_base_ms=100, backoff_max_ms=100
        ),
    )
    t0 = r.t
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.049)
    first = r.upstream.streams[0]
    assert first.reset is None
    assert first.timeout == encode_timeout(0.05).decode()  # the try's time, not the call's
    await clock.advance(0.002)
    assert first.reset == F.CANCEL
    assert first.reset_at is not None and by_tick(first.reset_at, t0 + 0.05)
    assert len(r.upstream.streams) == 1  # backing off
    await clock.advance(0.1)
    answer = call.ended.result()
    assert (answer.code, answer.response) == ("OK", b"second")
    second = r.upstream.streams[1]
    assert by_tick(second.opened_at, t0 + 0.15)
    assert second.address != first.address
    assert second.timeout == encode_timeout(0.05).decode()


@on_fake_clock
async def test_a_per_try_timeout_not_retried_answers_timeout(clock: FakeClock) -> None:
    """Without DEADLINE_EXCEEDED in `on`, the try's timeout is the caller's answer at
    50 ms, long before the call's 1 s deadline."""
    r = rig(
        clock,
        Hang(),
        Reply(),
        endpoints=2,
        per_try_timeout_ms=50,
        retries=Retries(max_attempts=3, on=["UNAVAILABLE"]),
    )
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.051)
    answer = call.ended.result()
    assert (answer.code, error(answer)) == ("DEADLINE_EXCEEDED", "timeout")
    assert len(r.upstream.streams) == 1


@on_fake_clock
async def test_the_deadline_bounds_all_attempts(clock: FakeClock) -> None:
    """A 250 ms deadline, 100 ms tries, no backoff: tries at 0, 100 and 200 ms, the
    third told the 50 ms left (not its 100 ms) and cut by the deadline at 250 ms."""
    r = rig(
        clock,
        Hang(),
        Hang(),
        Hang(),
        Reply(),
        endpoints=3,
        per_try_timeout_ms=100,
        retries=Retries(
            max_attempts=5, on=["DEADLINE_EXCEEDED"], backoff_base_ms=0, backoff_max_ms=0
        ),
    )
    t0 = r.t
    call = r.call(b"x", timeout_s=0.25)
    await clock.advance(0.249)
    assert not call.ended.done()
    await clock.advance(0.002)
    answer = call.ended.result()
    assert (answer.code, error(answer)) == ("DEADLINE_EXCEEDED", "timeout")
    streams = r.upstream.streams
    assert len(streams) == 3
    for stream, opened in zip(streams, (0.0, 0.1, 0.2), strict=True):
        assert by_tick(stream.opened_at, t0 + opened)
        assert stream.reset == F.CANCEL
    assert streams[2].timeout is not None
    assert streams[2].timeout == encode_timeout(0.25 - (streams[2].opened_at - t0)).decode()
    reset_at = streams[2].reset_at
    assert reset_at is not None and by_tick(reset_at, t0 + 0.25)


@on_fake_clock
async def test_an_upstream_cancel_just_before_our_deadline_is_our_timeout(
    clock: FakeClock,
) -> None:
    """A grpc-go server ends a call whose grpc-timeout ran out with RST_STREAM(CANCEL)
    and no status, which can beat our own timer: within 2 ms of the deadline that is
    DEADLINE_EXCEEDED for the caller, not CANCELLED."""
    r = rig(clock, Reset(F.CANCEL, delay_s=0.199))
    t0 = r.t
    call = r.call(b"x", timeout_s=0.2)
    await clock.advance(0.199)
    answer = call.ended.result()
    assert answer.code == "DEADLINE_EXCEEDED"
    assert at(r.t, t0 + 0.199)


@on_fake_clock
async def test_an_upstream_reset_before_the_deadline_is_relayed(clock: FakeClock) -> None:
    """RST_STREAM(INTERNAL_ERROR) from the upstream at 30 ms: INTERNAL for the caller at
    30 ms, saying so."""
    r = rig(clock, Reset(F.INTERNAL_ERROR, delay_s=0.03))
    t0 = r.t
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.03)
    answer = call.ended.result()
    assert answer.code == "INTERNAL"
    assert answer.details == "upstream reset the stream (HTTP/2 error 2)"
    assert at(r.t, t0 + 0.03)


@on_fake_clock
async def test_a_retry_carries_the_time_left_upstream(clock: FakeClock) -> None:
    """The deadline bounds the retries too (gRPC A6): a retry opened 100 ms into a 1 s
    call sends `grpc-timeout` 900 ms."""
    r = rig(
        clock,
        Reply("UNAVAILABLE"),
        Reply(),
        endpoints=2,
        retries=Retries(max_attempts=2, backoff_base_ms=100, backoff_max_ms=100),
    )
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.1)
    assert call.ended.result().code == "OK"
    first, second = r.upstream.streams
    assert first.timeout == encode_timeout(1.0).decode()
    assert second.timeout == encode_timeout(0.9).decode()
