"""Injected faults in a relayed Call (sidecar/h2relay/call.py step 5) on fake time: a
delay holds the call for exactly its time before the first attempt, an abort after it
answers with the fault's status; a deadline shorter than the delay ends the call at the
deadline, and no upstream ever sees it. No socket, no sleep (sidecar/testing)."""

from __future__ import annotations

from sidecar.faults import FaultAction
from sidecar.testing import FakeClock, Reply

from .call_rig import at, by_tick, error, on_fake_clock, rig


class Always:
    """A fault injector deciding `action` for every call."""

    def __init__(self, action: FaultAction) -> None:
        self.action = action

    def decide(self, direction: str, upstream: str, method: str, now: float) -> FaultAction:
        return self.action


@on_fake_clock
async def test_a_delay_holds_the_call_for_its_time(clock: FakeClock) -> None:
    """A 50 ms delay: the upstream sees the stream at exactly 50 ms, with the 50 ms
    spent already taken off the grpc-timeout it is sent."""
    r = rig(clock, Reply(), faults=Always(FaultAction(delay_s=0.05)))
    t0 = r.t
    call = r.call(b"x", timeout_s=1.0)
    await clock.advance(0.049)
    assert r.upstream.streams == []
    await clock.advance(0.001)
    assert call.ended.result().code == "OK"
    stream = r.upstream.streams[0]
    assert at(stream.opened_at, t0 + 0.05)
    assert stream.timeout == "950000u"


@on_fake_clock
async def test_a_delayed_abort_answers_the_fault_status_after_the_delay(clock: FakeClock) -> None:
    r = rig(clock, Reply(), faults=Always(FaultAction(delay_s=0.02, abort_status="UNAVAILABLE")))
    t0 = r.t
    call = r.call(b"x")
    await clock.advance(0.019)
    assert not call.ended.done()
    await clock.advance(0.001)
    answer = call.ended.result()
    assert (answer.code, error(answer)) == ("UNAVAILABLE", "fault")
    assert at(r.answered_at(call), t0 + 0.02)
    assert r.upstream.streams == []


@on_fake_clock
async def test_a_deadline_shorter_than_the_delay_ends_the_call_at_the_deadline(
    clock: FakeClock,
) -> None:
    """The call's timer runs during the delay: DEADLINE_EXCEEDED at 30 ms, `deadline`
    (no attempt was waiting on an endpoint), and the delay's end sends nothing."""
    r = rig(clock, Reply(), faults=Always(FaultAction(delay_s=0.1)))
    t0 = r.t
    call = r.call(b"x", timeout_s=0.03)
    await clock.advance(0.029)
    assert not call.ended.done()
    await clock.advance(0.002)
    answer = call.ended.result()
    assert (answer.code, error(answer)) == ("DEADLINE_EXCEEDED", "deadline")
    assert by_tick(r.answered_at(call), t0 + 0.03)
    await clock.advance(1.0)
    assert r.upstream.streams == []
