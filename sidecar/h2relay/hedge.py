"""A hedged call's copies in flight (gRPC A6 hedging, sidecar/retry/hedging.py).

Does I/O only through the call (call.py): its attempts queue frames on their pooled
connections, and one loop timer waits for the next copy; the time is the plane's clock.
A call without `hedging_policy` never builds any of this: its `hedge` is None and it is
the stream its one attempt's connection drives (no allocation, a None test at each hook).

A hedged call has several attempts at once. Each copy's connection drives a `Leg` (the
stream protocol of pool.py) instead of the call: the leg brings its attempt into the call's
focus (`call.attempt`) and hands the event to the call, which handles it as it handles
any attempt's. So the call's story stays one story; what differs is decided here, at
the call's hooks:

1. `add`: `next_attempt` made a copy: its leg, its endpoint marked tried (the next copy
   goes to another endpoint while there is one), the timer for the next copy.
2. `due`: the timer rang with no answer yet: the next copy goes, if the hedging budget
   gives one (throttling is asked in `next_attempt`, as for every attempt).
3. `on_request_data`: the caller's DATA goes to every copy whose stream is open, a copy
   kept in the replay buffer for those still waiting for a connection; the caller's
   window is credited at once (what it sent is held, bounded by the buffer). A request
   that outgrows the buffer commits the call to the first open copy (A6).
4. `failed`: a copy failed before the call committed: the schedule says whether that
   is the caller's answer (a fatal status), or the next copy goes, or the call waits
   for the copies in flight.
5. `commit`: a copy answered (response headers, or its final status): every other copy
   is cancelled (RST_STREAM CANCEL, reported CANCELLED, so no breaker or latency score
   learns from a loser) and the call drops its hedge: from here on it is an ordinary
   call whose one attempt happens to be driven through its leg.
6. `cancel`: the call ends otherwise (deadline, caller reset, an error of ours): every
   copy is cancelled with the call's outcome.

No reference cycle outlives a call: the hedge (and through it the legs) is dropped on
commit or cancel, and an attempt forgets its leg when it leaves its connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from sidecar.h2relay.attempt import Attempt, Failure
from sidecar.h2relay.hpack_codec import Block
from sidecar.h2relay.replay import ReplayBuffer
from sidecar.outcome import Outcome
from sidecar.retry.hedging import ANSWER, SEND, HedgeSchedule, Hedging

if TYPE_CHECKING:  # the layers around, for their types only
    from asyncio import TimerHandle
    from collections.abc import Sized

    from sidecar.h2relay.plane import Downstream, Plane
    from sidecar.h2relay.pool import UpstreamConnection


class Call(Protocol):
    """What a hedge reads and asks of its call (call.py's `Call`, which imports this
    module: a protocol here keeps the two from importing each other)."""

    plane: Plane
    down: Downstream
    sid: int
    done: bool
    replay: ReplayBuffer
    attempt: Attempt | None  # the attempt in focus
    tried: set[tuple[str, int]] | None
    last: Failure | None
    hedge: Hedge | None

    def next_attempt(self) -> None: ...
    def drop_attempt(self, outcome: Outcome) -> None: ...
    def answer_failure(self, failure: Failure) -> None: ...
    def crashed(self) -> None: ...
    # the upstream stream's events (pool.UpstreamStream), passed on by a leg
    def open_upstream(self, up: UpstreamConnection) -> None: ...
    def flush_up(self) -> None: ...
    def on_up_headers(self, block: Block, end_stream: bool) -> None: ...
    def on_up_data(self, data: bytes, end_stream: bool, flow: int) -> None: ...
    def on_up_reset(self, code: int) -> None: ...
    def on_up_lost(self, why: str, connect: bool) -> None: ...
    def on_up_refused(self) -> None: ...


class Leg:
    """One copy of a hedged call, as its upstream connection sees it (pool.UpstreamStream):
    every event brings the copy's attempt into the call's focus, then the call acts."""

    __slots__ = ("attempt", "call")

    def __init__(self, call: Call, attempt: Attempt) -> None:
        self.call = call
        self.attempt = attempt

    def _focus(self) -> bool:
        """False for a copy already reported (cancelled or failed): an event a
        connection had queued before the copy left it."""
        attempt = self.attempt
        if not attempt.open:
            return False
        self.call.attempt = attempt
        return True

    @property
    def down(self) -> Downstream:
        return self.call.down

    @property
    def up_pending(self) -> Sized:
        return self.attempt.queued

    def open_upstream(self, up: UpstreamConnection) -> None:
        if self._focus():
            call = self.call
            hedge = call.hedge
            if hedge is not None and not call.replay.replayable:
                # the request outgrew the buffer while every copy waited: this first
                # copy to open takes it all (replay.py drops it then), the others go
                hedge.keep_only(call, self.attempt)
            call.open_upstream(up)

    def flush_up(self) -> None:
        if self._focus():
            self.call.flush_up()

    def on_up_headers(self, block: Block, end_stream: bool) -> None:
        if self._focus():
            self.call.on_up_headers(block, end_stream)

    def on_up_data(self, data: bytes, end_stream: bool, flow: int) -> None:
        if self._focus():
            self.call.on_up_data(data, end_stream, flow)
        else:
            up = self.attempt.up
            if up is not None:
                up.conn.consumed(self.attempt.sid, flow)

    def on_up_reset(self, code: int) -> None:
        if self._focus():
            self.call.on_up_reset(code)

    def on_up_lost(self, why: str, connect: bool) -> None:
        if self._focus():
            self.call.on_up_lost(why, connect)

    def on_up_refused(self) -> None:
        if self._focus():
            self.call.on_up_refused()

    def crashed(self) -> None:
        self.call.crashed()

    def __repr__(self) -> str:
        return f"Leg({self.attempt!r})"


class Hedge:
    """A hedged call's schedule, its copies (legs) and the timer for the next copy."""

    __slots__ = ("legs", "schedule", "timer")

    def __init__(self, policy: Hedging, now: float) -> None:
        policy.on_call(now)  # the call's deposit into the hedging budget
        self.schedule = HedgeSchedule(policy)
        self.legs: list[Leg] = []
        self.timer: TimerHandle | None = None

    # ---- 1-2: sending copies -------------------------------------------------------

    def add(self, call: Call, attempt: Attempt, now: float) -> Leg:
        """`next_attempt` made `attempt`, a copy about to go: its leg; the next copy's
        timer; its endpoint tried, so the next copy picks another one."""
        leg = Leg(call, attempt)
        self.legs.append(leg)
        tried = call.tried
        if tried is None:
            tried = call.tried = set()
        tried.add(attempt.host.endpoint.key)
        due = self.schedule.on_sent(now)
        if due is not None:
            self._arm(call, due, now)
        return leg

    def _arm(self, call: Call, when: float, now: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = call.plane.loop.call_later(max(0.0, when - now), self.due, call)

    def due(self, call: Call) -> None:
        """The loop timer: `hedging_delay_ms` (or a pushback) passed without an answer."""
        self.timer = None
        try:
            if call.done or call.hedge is not self:
                return
            self.send_next(call, call.plane.clock())
            call.down.kick()
        except Exception:
            call.crashed()

    def send_next(self, call: Call, now: float) -> None:
        """The next copy, if the budget gives one; refused, the call goes on with the
        copies in flight (or, with none left, answers what the last one said)."""
        if not call.replay.replayable or not self.schedule.policy.allow_hedge(now):
            # the request is no longer whole in the buffer, or the budget is spent
            last = call.last
            if not self.goes_on(call) and last is not None:
                call.answer_failure(last)
            return
        call.next_attempt()

    def goes_on(self, call: Call) -> bool:
        """A copy could not be sent (no endpoint, throttled, no pending slot): no more
        copies; True while others are in flight (the focus moves to one of them)."""
        self.schedule.stop()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for leg in self.legs:
            if leg.attempt.open:
                call.attempt = leg.attempt
                return True
        return False

    # ---- 3: the request toward every copy ------------------------------------------

    def on_request_data(self, call: Call, data: bytes, end_stream: bool, flow: int) -> bool:
        """The caller's DATA while hedging: True when sent to the open copies (and kept
        for those still connecting); False leaves it to the call's own path (no copy
        has its stream yet, or the buffer overflowed and the call committed)."""
        opened = [leg for leg in self.legs if leg.attempt.sid and leg.attempt.up is not None]
        if not opened:
            return False  # held in the replay buffer until the first copy opens
        replay = call.replay
        if replay.size + len(data) > replay.limit:
            self.keep_only(call, opened[0].attempt)  # A6: one copy goes on, unbuffered
            return False
        replay.keep(data)
        for leg in opened:
            attempt = leg.attempt
            up = attempt.up
            assert up is not None
            attempt.send(leg, data, end_stream, 0)
            if end_stream and not attempt.queued:
                up.write_now()
            else:
                up.kick()
        if flow:
            call.down.conn.consumed(call.sid, flow)
        return True

    # ---- 4-6: how the copies end -----------------------------------------------------

    def failed(self, call: Call, failure: Failure, attempt: Attempt) -> bool:
        """`attempt`, a copy, failed (reported and detached already). True: the call
        goes on (copies in flight, or another one sent or due); False: the caller gets
        `failure`."""
        self._give_back(call, attempt)
        now = call.plane.clock()
        verdict, when = self.schedule.failed(failure.status, failure.reason, failure.pushback, now)
        if verdict == ANSWER:
            self.keep_only(call, attempt)  # its answer is the caller's: the rest go
            return False
        if verdict == SEND:
            if when <= now:
                self.send_next(call, now)
            else:
                self._arm(call, when, now)
                self.goes_on_waiting(call)
            return True
        return self.goes_on_waiting(call)

    def goes_on_waiting(self, call: Call) -> bool:
        """Focus on a copy still in flight: True if there is one, or a copy is due."""
        for leg in self.legs:
            if leg.attempt.open:
                call.attempt = leg.attempt
                return True
        return self.timer is not None

    def commit(self, call: Call, winner: Attempt) -> None:
        """`winner` answered first (response headers, or its final status): the call is
        its; every other copy is cancelled and counted, and the hedge dropped."""
        if winner.number > 1:
            self.schedule.policy.won.inc()
        self.keep_only(call, winner)

    def keep_only(self, call: Call, keep: Attempt) -> None:
        """The call goes on with `keep` alone (it answered, its fatal answer is the
        caller's, or the request outgrew the buffer): cancel and count the others."""
        self._drop_all(call, keep, Outcome.CANCELLED, count=True)

    def cancel(self, call: Call, outcome: Outcome) -> None:
        """The call ends without a winner: every copy but the focus (the call cancels
        that one itself) is cancelled with `outcome`."""
        self._drop_all(call, call.attempt, outcome, count=False)

    def _drop_all(self, call: Call, keep: Attempt | None, outcome: Outcome, count: bool) -> None:
        self.schedule.stop()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        legs = self.legs
        self.legs = []
        call.hedge = None  # from here on an ordinary call (and no cycle through the legs)
        cancelled = 0
        for leg in legs:
            attempt = leg.attempt
            if attempt is keep or not attempt.open:
                continue
            call.attempt = attempt
            call.drop_attempt(outcome)
            self._give_back(call, attempt)
            cancelled += 1
        if count and cancelled:
            self.schedule.policy.cancelled.inc(cancelled)
        call.attempt = keep

    def _give_back(self, call: Call, attempt: Attempt) -> None:
        """A copy that leaves owes the caller the window credit of DATA it still held."""
        credit = sum(flow for _, _, flow in attempt.queued)
        attempt.queued = []
        if credit and not call.done:
            call.down.conn.consumed(call.sid, credit)

    def __repr__(self) -> str:
        return f"Hedge({self.schedule!r}, {self.legs!r})"
