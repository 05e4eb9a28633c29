"""One proxied call through the relay: the same story as sidecar/proxy/pipeline.py,
told in frames instead of grpcio calls.

Does I/O only by queueing frames on the two sans-IO connections (the protocols in
sidecar/h2relay/relay.py write them out) and by timers. The steps, and why each sits
where it sits (numbers match the grpcio pipeline):

1. Route by the `:path` service (cached per distinct header block, request.py). No
   route: trailers-only UNIMPLEMENTED, `x-sidecar-error: no_route`.
2. Deadline: the caller's `grpc-timeout`, else the route's `timeout_ms`; one timer per
   call (a slot in the plane's coarse timer wheel, timers.py; the per-try timeout moves
   it). Before admission and attempts, since all of them spend from this budget.
3. Headers: hop-by-hop dropped, `x-request-id` added when absent (request.py).
4. Admit (seam b, inbound): `Admission.acquire(priority, deadline)` before any upstream stream is
   opened, so a dropped call costs no upstream work. AdmitAll skips the coroutine.
5. Fault (seam c): delay by a timer, abort as a sidecar error.
6. Attempts: begin the call (seam a: limits, once), then per attempt pick (exclude
   endpoints tried), ask seam a (throttling), `host.start`, open a stream
   on the endpoint's pooled connection, send headers (with the remaining time as
   `grpc-timeout`) and the request DATA as it arrives. Exactly one `host.finish(...)`
   per attempt with the outcome from sidecar/outcome.py, read from the trailers (or the
   trailers-only headers), or the local failure (connect, lost connection, timeout).
   Retry (seam a) only while nothing went back to the caller and the request bytes are
   still held (up to `retry_buffer` bytes): a connection that failed before any
   response byte, a GOAWAY/REFUSED_STREAM that says the peer never processed it, or a
   trailers-only error answer (nothing of it was forwarded yet).
7. Deliver: headers, DATA and trailers are forwarded as they come; the caller's
   RST_STREAM becomes an upstream RST_STREAM(CANCEL) and the reverse.

This module holds the call's state, steps 1-5 and the call's end. The rest are written
as functions of the call in their own modules, each behind a one-line method of `Call`
(a compiled class, see sidecar/native.py, takes methods only from its own body):
attempts.py (6: the attempts, retries and their bookkeeping), deadlines.py (the call's
one timer), forwarding.py (6 and 7 in frames, both ways), answers.py (what the sidecar
answers the caller itself: its own statuses, local methods).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from sidecar.h2relay import answers, attempts, deadlines, forwarding
from sidecar.h2relay import frames as F
from sidecar.h2relay.stepper import Stepper
from sidecar.h2relay.grpcwire import MessageLimit
from sidecar.h2relay.hpack_codec import Block
from sidecar.h2relay.request import Prepared, PreparedResponse
from sidecar.outcome import Outcome, classify
from sidecar.policy import NO_TOKEN, CallState, Refusal

if TYPE_CHECKING:
    from sidecar.h2relay.relay import Downstream, Plane, Upstream

log = logging.getLogger(__name__)
_monotonic = time.monotonic
# x-request-id: 32 hex digits like a uuid4's, a random per-process prefix and a counter
# (unique, which is all an id needs; uuid4() cost ~6 µs, 7% of a relayed call's CPU)
_ID_PREFIX = os.urandom(8).hex().encode()
_ids = itertools.count(int.from_bytes(os.urandom(4), "big"))


def _new_request_id() -> bytes:
    return b"%s%016x" % (_ID_PREFIX, next(_ids))


class Call:
    __slots__ = (
        "address",
        "attempt",
        "attempt_open",
        "attempt_started",
        "code",
        "deadline",
        "done",
        "down",
        "down_pending",
        "held",
        "held_bytes",
        "held_flow",
        "host",
        "last",
        "local_reason",
        "pending",
        "plane",
        "replayable",
        "req",
        "req_ended",
        "req_limit",
        "request_id",
        "resp_limit",
        "responded",
        "retry",
        "sid",
        "started",
        "timer",
        "token",
        "tried",
        "try_ends",
        "up",
        "up_pending",
        "up_sid",
        "upstream_ended",
        "waiter",
    )  # fmt: skip

    def __init__(self, plane: Plane, down: Downstream, sid: int, req: Prepared) -> None:
        self.plane = plane
        self.down = down
        self.sid = sid
        self.req = req
        self.started = _monotonic()
        self.deadline: float | None = None
        self.timer: int | None = None  # the slot in the plane's timer wheel (timers.py)
        self.request_id = b""
        self.up: Upstream | None = None
        self.up_sid = 0
        self.host: Any = None
        self.address = ""
        self.token: Any = NO_TOKEN  # admission (inbound)
        self.attempt_started = 0.0
        self.retry: CallState | None = None  # the upstream's CallState (seam a) once the call began
        self.tried: set[tuple[str, int]] | None = None
        self.attempt = 0
        self.held: list[bytes] = []  # request DATA kept for a replay / not yet sent
        self.held_bytes = 0
        self.held_flow = 0  # window not yet credited for held bytes
        self.replayable = True
        self.req_ended = False  # the caller sent END_STREAM
        self.up_pending: list[list[Any]] = []  # [data, end_stream, flow] waiting for window
        self.down_pending: list[list[Any]] = []  # [data or block, end_stream, flow, is_headers]
        self.responded = False  # response headers went to the caller
        self.done = False  # final status sent (or stream reset) toward the caller
        self.attempt_open = False  # host.start called, finish not yet
        self.upstream_ended = False
        self.req_limit = MessageLimit(plane.max_message_bytes)
        self.resp_limit: MessageLimit | None = None
        self.code = "CANCELLED"
        self.waiter: Any = None  # admission task or fault timer
        self.local_reason: str | None = None
        self.try_ends: float | None = None  # the open attempt's per-try timeout
        # the last failed attempt's answer (a block from the upstream, or a local error):
        # what the caller gets when a retry cannot go ahead (the grpcio pipeline's `last`)
        self.last: tuple[bytes | None, str, str, str | None] | None = None
        self.pending: Any = None  # the upstream's limits while this call waits (max_pending)

    # ---- 1-5: before the first attempt ------------------------------------------

    def start(self) -> None:
        req = self.req
        plane = self.plane
        route = req.route
        plane.calls_started(self)
        if req.error is not None:
            self.fail("INTERNAL", f"malformed gRPC request ({req.error})", "bad_request")
            return
        if route is None:
            local = plane.local_methods.get(req.method)
            if local is not None:
                self.waiter = local  # answered by the sidecar once the request is whole
                return
            self.fail(
                "UNIMPLEMENTED",
                f"sidecar has no route for method {req.method}: no upstream lists its "
                f"service in grpc_services (check the sidecar config)",
                "no_route",
            )
            return
        remaining = req.timeout_s if req.timeout_s is not None else route.default_timeout_s
        if remaining is not None:
            self.deadline = self.started + remaining
            self.timer = plane.wheel.add(self.deadline, self)
        self.request_id = b"" if req.has_request_id else _new_request_id()
        if plane.admit_all:
            self.after_admission()
        else:
            # stepped by hand: no Task unless the call really waits in the queue (stepper.py)
            driver = self.waiter = Stepper(
                plane.loop,
                plane.admission.acquire(self.req.priority, self.deadline),
                self._admitted,
                self._admission_failed,
            )
            driver.step()

    def _admission_failed(self, exc: BaseException) -> None:
        self.waiter = None
        try:
            raise exc
        except Exception:
            self.crashed()

    def _admitted(self, admitted: Any) -> None:
        self.waiter = None
        try:
            if self.done:
                if not isinstance(admitted, Refusal):
                    admitted.release(Outcome.CANCELLED, _monotonic())
                return
            if isinstance(admitted, Refusal):
                self.refuse(admitted)
                self.down.kick()
                return
            self.token = admitted
            self.after_admission()
            self.down.kick()
        except Exception:
            self.crashed()

    def after_admission(self) -> None:
        plane = self.plane
        route = self.req.route
        fault = plane.faults.decide(plane.direction, route.name, self.req.method, _monotonic())
        if fault is not None:
            if fault.abort_status is not None and fault.delay_s <= 0:
                self.fail(
                    fault.abort_status,
                    f"fault injected by the sidecar config for upstream {route.name}",
                    "fault",
                )
                return
            if fault.delay_s > 0:
                self.waiter = plane.loop.call_later(
                    fault.delay_s, self.guard, self._after_delay, fault
                )
                return
        if self._begin():
            self.next_attempt()

    def _begin(self) -> bool:
        """The upstream's limits, one token per call held across its retries (seam a)."""
        state = self.req.route.calls.begin(_monotonic())
        if isinstance(state, Refusal):
            self.refuse(state)
            return False
        self.retry = state
        return True

    def _after_delay(self, fault: Any) -> None:
        self.waiter = None
        if self.done:
            return
        if fault.abort_status is not None:
            route = self.req.route
            self.fail(
                fault.abort_status,
                f"fault injected by the sidecar config for upstream {route.name}",
                "fault",
            )
        elif self._begin():
            self.next_attempt()
        self.down.kick()

    # ---- the end of a call: a bug of ours, and the one report of the call ----------

    def guard(self, step: Any, *args: Any) -> None:
        """Run a timer's step; a bug in it ends this call, not the connection."""
        try:
            step(*args)
        except Exception:
            self.crashed()

    def crashed(self) -> None:
        """A bug of ours inside this call (the caller of this method caught it): log it,
        answer INTERNAL with `x-sidecar-error: internal`, keep the connection (the
        grpcio pipeline's `except Exception` around one call, the same answer)."""
        log.exception("%s call %s failed inside the sidecar", self.plane.direction, self.req.method)
        try:
            if not self.done:
                self.fail(
                    "INTERNAL",
                    "the sidecar failed while handling this call (see its log)",
                    "internal",
                )
                return
        except Exception:
            log.exception("failing the call failed too: resetting its stream")
        # last resort: forget the call and reset its stream; the connection lives on
        self.done = True
        down = self.down
        with contextlib.suppress(Exception):
            self._cancel_upstream(Outcome.CANCELLED)
        if down.calls.pop(self.sid, None) is not None:
            down.conn.reset(self.sid, F.INTERNAL_ERROR)
            with contextlib.suppress(Exception):
                self.plane.call_done(self)
        down.kick()

    def _finish_call(self) -> None:
        """Forget the caller's stream; report the call (metrics, admission token)."""
        down = self.down
        if down.calls.pop(self.sid, None) is None:
            return
        if self.req_ended:
            down.conn.close_stream(self.sid)
        else:
            down.conn.reset(self.sid, F.NO_ERROR if self.responded else F.CANCEL)
        if self.timer is not None:
            self.plane.wheel.remove(self.timer, self)
            self.timer = None
        if self.retry is not None:
            self._end_attempt(Outcome.CANCELLED)  # no-op unless one is still open
            self.retry.release(classify(self.code), _monotonic())  # exactly once
            self.retry = None
        if self.token is not NO_TOKEN:
            self.token.release(classify(self.code), _monotonic())
            self.token = NO_TOKEN
        self.plane.call_done(self)

    # ---- 6: attempts (attempts.py) --------------------------------------------------

    def next_attempt(self) -> None:
        attempts.next_attempt(self)

    def _leave_pending(self) -> None:
        attempts._leave_pending(self)

    def _stop_retrying(
        self, status: str, message: str, reason: str | None, refusal: Refusal | None = None
    ) -> None:
        attempts._stop_retrying(self, status, message, reason, refusal)

    def _give_last(self) -> None:
        attempts._give_last(self)

    def _attempt_failed(self, reason: str, outcome: Outcome, why: str) -> None:
        attempts._attempt_failed(self, reason, outcome, why)

    def _retry(
        self, outcome: Outcome, status: str, pushback: bytes | None, sidecar_error: str | None
    ) -> bool:
        return attempts._retry(self, outcome, status, pushback, sidecar_error)

    def _retry_now(self) -> None:
        attempts._retry_now(self)

    def _upstream_done(self, resp: PreparedResponse) -> Outcome | None:
        return attempts._upstream_done(self, resp)

    def _end_attempt(self, outcome: Outcome) -> None:
        attempts._end_attempt(self, outcome)

    def _detach_upstream(self, reset: bool) -> None:
        attempts._detach_upstream(self, reset)

    def _cancel_upstream(self, outcome: Outcome) -> None:
        attempts._cancel_upstream(self, outcome)

    # ---- the call's timer (deadlines.py) ---------------------------------------------

    def _expired(self) -> bool:
        return deadlines._expired(self)

    def _arm(self, when: float) -> None:
        deadlines._arm(self, when)

    def fire(self) -> None:
        deadlines.fire(self)

    def on_timer(self) -> None:
        deadlines.on_timer(self)

    def _per_try_timeout(self) -> None:
        deadlines._per_try_timeout(self)

    def on_deadline(self) -> None:
        deadlines.on_deadline(self)

    def _deadline_message(self) -> str:
        return deadlines._deadline_message(self)

    # ---- 6-7 in frames, both ways (forwarding.py) -----------------------------------

    def open_upstream(self, up: Upstream) -> None:
        forwarding.open_upstream(self, up)

    def _send_up(self, data: bytes, end_stream: bool, flow: int) -> None:
        forwarding._send_up(self, data, end_stream, flow)

    def flush_up(self) -> None:
        forwarding.flush_up(self)

    def on_data(self, data: bytes, end_stream: bool, flow: int) -> None:
        forwarding.on_data(self, data, end_stream, flow)

    def on_reset(self, code: int) -> None:
        forwarding.on_reset(self, code)

    def on_up_headers(self, block: Block, end_stream: bool) -> None:
        forwarding.on_up_headers(self, block, end_stream)

    def on_up_data(self, data: bytes, end_stream: bool, flow: int) -> None:
        forwarding.on_up_data(self, data, end_stream, flow)

    def on_up_reset(self, code: int) -> None:
        forwarding.on_up_reset(self, code)

    def on_up_lost(self, why: str, connect: bool) -> None:
        forwarding.on_up_lost(self, why, connect)

    def on_up_refused(self) -> None:
        forwarding.on_up_refused(self)

    def _to_down(self, data: bytes, end_stream: bool, flow: int, is_headers: bool) -> None:
        forwarding._to_down(self, data, end_stream, flow, is_headers)

    def flush_down(self) -> None:
        forwarding.flush_down(self)

    def _close_down(self) -> None:
        forwarding._close_down(self)

    def settle(self, outcome: Outcome) -> None:
        forwarding.settle(self, outcome)

    # ---- what the sidecar answers itself (answers.py) ------------------------------

    def _target(self) -> str:
        return answers._target(self)

    def refuse(self, refusal: Refusal) -> None:
        answers.refuse(self, refusal)

    def fail(
        self,
        status: str,
        message: str,
        reason: str | None,
        extra: tuple[Any, ...] = (),
        block: bytes | None = None,
    ) -> None:
        answers.fail(self, status, message, reason, extra, block)

    def _answer_locally(self) -> None:
        answers._answer_locally(self)

    def local_send(self, message: bytes) -> None:
        answers.local_send(self, message)

    def local_end(self, status: str, message: str) -> None:
        answers.local_end(self, status, message)
