"""A relayed Call's retries (sidecar/h2relay/call.py, steps 7-8) on fake time: which
statuses are retried, on another endpoint, after exactly the backoff or the peer's
pushback; `max_attempts` and the retry budget bound them; the caller then gets the last
upstream answer as it came. No socket, no sleep (sidecar/testing)."""

from __future__ import annotations

from sidecar.config import Retries
from sidecar.testing import FakeClock, Reply

from .call_rig import at, error, on_fake_clock, rig


@on_fake_clock
async def test_a_status_listed_in_retries_on_is_retried_elsewhere_after_its_backoff(
    clock: FakeClock,
) -> None:
    """UNAVAILABLE, then OK: the retry opens on the other endpoint exactly 100 ms
    (the first backoff) after the failure, carrying the same request."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", message="try again"),
        Reply(messages=[b"fine"]),
        endpoints=2,
        retries=Retries(max_attempts=3, backoff_base_ms=100, backoff_max_ms=1000),
    )
    t0 = r.t
    call = r.call(b"request")
    await clock.advance(0.099)
    assert len(r.upstream.streams) == 1 and not call.ended.done()
    first = r.upstream.streams[0]
    assert first.answered_at is not None and at(first.answered_at, t0)
    await clock.advance(0.001)
    answer = call.ended.result()
    assert (answer.code, answer.response) == ("OK", b"fine")
    second = r.upstream.streams[1]
    assert at(second.opened_at, t0 + 0.1)
    assert second.address != first.address
    assert second.messages() == first.messages() == [b"request"]


@on_fake_clock
async def test_a_status_not_listed_goes_to_the_caller_as_the_upstream_said_it(
    clock: FakeClock,
) -> None:
    """INTERNAL is not in `on`: one attempt, its status and message to the caller, no
    x-sidecar-error (the app's own answer, not a sidecar decision)."""
    r = rig(
        clock,
        Reply("INTERNAL", message="app bug"),
        Reply(),
        endpoints=2,
        retries=Retries(max_attempts=3, on=["UNAVAILABLE"]),
    )
    answer = await r.call(b"x").ended
    await clock.advance(1.0)
    assert (answer.code, answer.details, error(answer)) == ("INTERNAL", "app bug", None)
    assert len(r.upstream.streams) == 1


@on_fake_clock
async def test_max_attempts_bounds_the_retries_each_after_a_doubled_backoff(
    clock: FakeClock,
) -> None:
    """Three UNAVAILABLE answers with max_attempts 3: attempts at 0, 0.1 and 0.3 s
    (backoffs 100 then 200 ms), each on a new endpoint; the third answer is final."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", message="one"),
        Reply("UNAVAILABLE", message="two"),
        Reply("UNAVAILABLE", message="three"),
        Reply(),
        endpoints=3,
        retries=Retries(max_attempts=3, backoff_base_ms=100, backoff_max_ms=1000),
    )
    t0 = r.t
    call = r.call(b"x")
    await clock.advance(0.3)
    answer = call.ended.result()
    assert (answer.code, answer.details) == ("UNAVAILABLE", "three")
    streams = r.upstream.streams
    assert all(at(s.opened_at, t0 + d) for s, d in zip(streams, (0.0, 0.1, 0.3), strict=True))
    assert len({s.address for s in streams}) == 3
    await clock.advance(5.0)
    assert len(streams) == 3


@on_fake_clock
async def test_the_peer_pushback_replaces_the_backoff(clock: FakeClock) -> None:
    """grpc-retry-pushback-ms: 300 (gRPC A6): the retry waits exactly 300 ms, not 25."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", trailers=[("grpc-retry-pushback-ms", "300")]),
        Reply(),
        endpoints=2,
        retries=Retries(max_attempts=2, backoff_base_ms=25, backoff_max_ms=25),
    )
    t0 = r.t
    call = r.call(b"x")
    await clock.advance(0.299)
    assert len(r.upstream.streams) == 1
    await clock.advance(0.001)
    assert call.ended.result().code == "OK"
    assert at(r.upstream.streams[1].opened_at, t0 + 0.3)


@on_fake_clock
async def test_a_pushback_that_says_stop_ends_the_retries(clock: FakeClock) -> None:
    """A negative pushback means do not retry (A6): one attempt, its answer."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", message="go away", trailers=[("grpc-retry-pushback-ms", "-1")]),
        Reply(),
        endpoints=2,
        retries=Retries(max_attempts=3),
    )
    answer = await r.call(b"x").ended
    await clock.advance(1.0)
    assert (answer.code, answer.details) == ("UNAVAILABLE", "go away")
    assert len(r.upstream.streams) == 1


@on_fake_clock
async def test_the_retry_budget_once_spent_stops_retries(clock: FakeClock) -> None:
    """A budget of one retry per 10 s window (0 % of calls, 0.1 retries/s): the first
    call's retry spends it, so the second call's failure goes to its caller."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", message="first"),
        Reply(messages=[b"ok"]),
        Reply("UNAVAILABLE", message="second"),
        Reply(),
        endpoints=2,
        retries=Retries(
            max_attempts=3,
            budget_percent=0,
            min_retries_per_s=0.1,
            budget_window_s=10,
            backoff_base_ms=10,
            backoff_max_ms=10,
        ),
    )
    first = r.call(b"one")
    await clock.advance(0.01)
    assert first.ended.result().code == "OK"
    second = r.call(b"two")
    await clock.advance(0.5)
    answer = second.ended.result()
    assert (answer.code, answer.details) == ("UNAVAILABLE", "second")
    assert len(r.upstream.streams) == 3


@on_fake_clock
async def test_no_retry_once_the_answer_began(clock: FakeClock) -> None:
    """Headers and a message went to the caller, then UNAVAILABLE in the trailers: the
    call is committed to the attempt, the caller gets both, nothing is retried."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", messages=[b"partial"], message="mid-stream"),
        Reply(),
        endpoints=2,
        retries=Retries(max_attempts=3),
    )
    call = r.call(b"x", unary=False)
    answer = await call.ended
    await clock.advance(1.0)
    assert (answer.code, answer.details) == ("UNAVAILABLE", "mid-stream")
    assert call.take() == b"partial"
    assert len(r.upstream.streams) == 1


@on_fake_clock
async def test_a_backoff_longer_than_the_time_left_is_not_waited(clock: FakeClock) -> None:
    """With 50 ms left and a 100 ms backoff the retry could not finish: the caller gets
    the upstream's answer at once, not DEADLINE_EXCEEDED 50 ms later."""
    r = rig(
        clock,
        Reply("UNAVAILABLE", message="busy"),
        Reply(),
        endpoints=2,
        retries=Retries(max_attempts=3, backoff_base_ms=100, backoff_max_ms=100),
    )
    t0 = r.t
    call = r.call(b"x", timeout_s=0.05)
    await clock.settle()
    answer = call.ended.result()
    assert (answer.code, answer.details, r.t) == ("UNAVAILABLE", "busy", t0)
