"""Inbound admission for asyncio: the thin enforcement layer over `queue.py`.

Does no I/O, but waits (asyncio futures and one timer); all decisions are made by
the pure `AdmissionQueue`. The inbound data plane asks it once per call to the app,
before anything is sent (`acquire(priority_header, deadline)`, through the seam in
sidecar/policy_adapters.py): the returned token is released exactly once, by
`finish(status)`/`success`/`ignore`/`dropped`, when the call ends; a drop raises
`Dropped`, whose status and trailers the caller gets.
Every waiting request ends by its deadline or CoDel's sojourn bound (at most
`codel_interval_ms`), whichever is first: nothing waits forever.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sidecar.config import InboundAdmission
from sidecar.logs import Folding
from sidecar.outcome import SIDECAR_ERROR_KEY
from sidecar.retry.backoff import PUSHBACK_KEY
from sidecar.shedding.limit import make_limit
from sidecar.shedding.metrics import SheddingMetrics
from sidecar.shedding.queue import ADMIT, QUEUED, AdmissionQueue, parse_priority

# App statuses that say "I could not cope": they shrink an adaptive limit.
_OVERLOAD_STATUSES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED"})
_fold = Folding(logging.getLogger(__name__))  # under overload: one line per interval, counted


class Dropped(Exception):
    """The request was dropped before reaching the app. Answer with `status`
    (UNAVAILABLE) and `trailers` (`x-sidecar-error`, `grpc-retry-pushback-ms`)."""

    status = "UNAVAILABLE"

    def __init__(self, reason: str, pushback_ms: int) -> None:
        super().__init__(f"dropped by the sidecar: {reason}")
        self.reason = reason  # "overloaded" or "deadline"
        self.pushback_ms = pushback_ms

    @property
    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((SIDECAR_ERROR_KEY, self.reason), (PUSHBACK_KEY, str(self.pushback_ms)))


class AdmissionToken:
    """An admitted call's slot. Release it once: success, ignore or dropped."""

    __slots__ = ("_admission", "admitted_at", "released")

    def __init__(self, admission: Admission, admitted_at: float) -> None:
        self._admission = admission
        self.admitted_at = admitted_at
        self.released = False

    def _release(self, sample: bool, dropped: bool) -> None:
        if self.released:
            return
        self.released = True
        now = time.monotonic()
        rtt = now - self.admitted_at if sample else None
        self._admission._release(now, rtt, dropped)

    def success(self) -> None:
        """The app answered (any application status): a latency sample."""
        self._release(True, False)

    def dropped(self) -> None:
        """The app timed out or refused for overload: shrinks an adaptive limit."""
        self._release(True, True)

    def ignore(self) -> None:
        """No sample (the caller cancelled, or the call broke on our side)."""
        self._release(False, False)

    def finish(self, status: str) -> None:
        """Release by the app's gRPC status name."""
        if status == "CANCELLED":
            self.ignore()
        elif status in _OVERLOAD_STATUSES:
            self.dropped()
        else:
            self.success()


class _Ticket:
    """A queued request, as the pure queue sees it."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        # Made only once the request is really queued: a drop needs no future.
        self.future: asyncio.Future[str] | None = None


class Admission:
    """One per inbound listener, built from `inbound.admission`."""

    def __init__(self, config: InboundAdmission, metrics: SheddingMetrics | None = None) -> None:
        self.config = config
        metrics = metrics or SheddingMetrics()
        self.queue: AdmissionQueue[_Ticket] = AdmissionQueue(
            make_limit(config),
            queue_size=config.queue_size,
            codel_target_s=config.codel_target_ms / 1000.0,
            codel_interval_s=config.codel_interval_ms / 1000.0,
            min_deadline_s=config.min_deadline_ms / 1000.0,
        )
        self.pushback_ms = config.pushback_ms
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # one inbound listener per sidecar: its queue is what the sidecar's /metrics shows
        metrics.limit.set_function(lambda: self.queue.limit)
        metrics.in_flight.set_function(lambda: self.queue.in_flight)
        metrics.queued.set_function(lambda: self.queue.queued)
        self._dropped = {r: metrics.dropped.labels(r) for r in ("overloaded", "deadline")}

    def _drop(self, reason: str) -> Dropped:
        self._dropped[reason].inc()
        _fold.log(
            time.monotonic(),
            logging.WARNING,
            reason,
            "inbound admission dropped a call for the app (%s): limit %d, %d in flight, %d queued",
            reason,
            self.queue.limit,
            self.queue.in_flight,
            self.queue.queued,
        )
        return Dropped(reason, self.pushback_ms)

    async def acquire(self, priority: str | None, deadline: float | None) -> AdmissionToken:
        """Wait for a slot; raises Dropped. The token is released exactly once by the caller.

        `priority`: the `x-sidecar-priority` value (None: default). `deadline`:
        absolute, on `time.monotonic()` (None: the caller set none).
        """
        now = time.monotonic()
        ticket = _Ticket()
        fate, evicted = self.queue.offer(now, ticket, parse_priority(priority), deadline)
        if evicted:
            self._resolve(evicted)
        if fate == ADMIT:
            return AdmissionToken(self, now)
        if fate != QUEUED:
            raise self._drop(fate)
        future = ticket.future = asyncio.get_running_loop().create_future()
        self._schedule()
        try:
            fate = await future
        except asyncio.CancelledError:
            admitted = future.done() and not future.cancelled() and future.result() == ADMIT
            if not self.queue.cancel(ticket) and admitted:
                # Admitted just as the caller left: hand the slot on.
                AdmissionToken(self, time.monotonic()).ignore()
            raise
        if fate == ADMIT:
            return AdmissionToken(self, time.monotonic())
        raise self._drop(fate)

    def _resolve(self, events: list[tuple[_Ticket, str]]) -> None:
        lost = 0
        for ticket, fate in events:
            future = ticket.future
            if future is not None and not future.done():
                future.set_result(fate)
            elif fate == ADMIT:
                lost += 1  # its waiter was cancelled before it could leave the queue
        for _ in range(lost):
            # Give the slot back at once, without a latency sample.
            self._release(time.monotonic(), None, False)

    def _release(self, now: float, rtt_s: float | None, dropped: bool) -> None:
        events = self.queue.release(now, rtt_s, dropped)
        if events:
            self._resolve(events)
        self._schedule()

    def _on_timer(self) -> None:
        self._timer = None
        events = self.queue.poll(time.monotonic())
        if events:
            self._resolve(events)
        self._schedule()

    def _schedule(self) -> None:
        """Keep one timer armed for the queue's next drop."""
        when = self.queue.next_wakeup()
        if when is None:
            return
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        delay = max(0.0, when - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def __repr__(self) -> str:
        return f"Admission({self.queue!r})"
