"""One proxied call through the relay, told in the order a call meets its steps.

Does I/O only by queueing frames on the two sans-IO connections (plane.py and pool.py
write them out) and through timers (the plane's wheel, timers.py; loop timers for delays). It
reads the time only from its plane's clock (`Plane.clock`: time.monotonic, or the fake
clock of sidecar/testing/, so its unit tests run on fake time). The state lives in
small objects of its own, each with a few verbs: `Deadline` (its time, deadline.py),
`ReplayBuffer` (the request bytes it keeps, replay.py), one `Attempt` per upstream
stream that says what happened (attempt.py), the policies behind their seams
(sidecar/policy.py). This file decides; they keep state. The steps, and why each
sits where it sits:

1. Route by the `:path` service and the `routes` rules on method and headers (cached
   per distinct header block, request.py; sidecar/route_rules.py). First, because every
   later step reads the route's policies. A weighted split picks its backend here, per
   call, since one header block's route is shared by every call repeating it. No
   route: trailers-only UNIMPLEMENTED, `x-sidecar-error: no_route`; a local method
   (Health) is answered here once its request is whole (local_reply.py).
1b. Authorize (inbound, `inbound.authz`): the caller's SPIFFE ID from its connection's
   certificate against the rules (sidecar/authz/step.py); denied: PERMISSION_DENIED or
   UNAUTHENTICATED, `x-sidecar-error: authz_denied`. After routing (health is answered
   to anyone), before the deadline timer and admission (a denied call costs nothing).
2. Deadline: the caller's `grpc-timeout`, else the route's `timeout_ms`, one timer per
   call. Before admission and the attempts, because all of them spend from this budget
   (a call may wait in the admission queue, and inbound admission drops calls whose
   remaining time is too short).
3. Headers: hop-by-hop fields dropped, `x-request-id` added when absent (request.py),
   and inbound, `x-sidecar-caller` set to an mTLS caller's SPIFFE ID (any the caller
   sent is dropped); with tracing on, the W3C trace context read or started
   (sidecar/tracing/context.py), each attempt sending its own span id upstream as
   `traceparent`'s parent. Before any attempt, so every attempt and every hop logs one
   id. Then the route's rate limit (sidecar/ratelimit.py): a token, or RESOURCE_EXHAUSTED
   with `x-sidecar-error: rate_limited` and the pushback; before admission and the
   limits, so a call over its rate holds no queue slot and no upstream slot.
4. Admit (seam b, inbound): `AdmissionPolicy.acquire(priority, deadline)` before any upstream
   stream is opened, so a dropped call costs no upstream work. AdmitAll skips it.
5. Fault (seam c): a delay by a timer, or an abort as a sidecar error. After admission,
   so a delayed inbound call holds its admission slot as a slow app would; before the
   limits, so a delayed call holds no upstream slot while it sleeps.
6. Limits (seam a, `begin`): one token per call, held across its retries, so retries
   of one call never overlap and never count twice against `limits.max_requests`.
   A route's mirror takes its copy here (h2relay/mirror.py): only calls that really
   go upstream are copied, and the copy collects the request as it comes (step 9's
   on_data); the shadow is sent apart and never waited for.
7. Attempts: pick an endpoint (excluding those tried), ask seam a (throttling, per
   attempt: it must see retries too), then take the endpoint's pooled connection, or
   wait for it holding a `limits.max_pending` slot (seam a's `pending`). Send the
   headers (with the time left as `grpc-timeout`) and the request DATA as it arrives,
   a copy kept for a replay (replay.py). Each attempt reports once, with its outcome
   (sidecar/outcome.py).
7b. Hedge (`hedging_policy`, gRPC A6; hedge.py): a hedged call sends a copy every
   `hedging_delay_ms` until one answers, each a new attempt from step 7 on its own
   stream (a `Leg`), the request replayed from the buffer of step 8; the first answer
   commits the call and cancels the other copies. After the limits, because the copies
   share the call's one limits token; in place of retries (config refuses both).
8. Retry (seam a, `retry`) only while nothing went back to the caller and the request
   is still whole in the buffer: a connection that failed before any response byte,
   a GOAWAY/REFUSED_STREAM that says the peer never processed it, a per-try timeout, a
   trailers-only error answer. When no retry can go ahead, the caller gets the last
   attempt's answer (`last`), not the reason the retry was refused.
9. Deliver: headers, DATA and trailers go to the caller as they come, each side's
   window credited only once its bytes went on; the caller's RST_STREAM becomes an
   upstream RST_STREAM(CANCEL), and the reverse.
10. End: one report per call (metrics, the limits token, the admission token, the
   trace's spans when sampled or failed), in
   `_finish_call`, whichever way it ended; a bug of ours ends the call, never the
   connection (`crashed`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from typing import TYPE_CHECKING, Any, Protocol, cast

from sidecar.cluster.cluster import Cluster
from sidecar.faults import FaultAction
from sidecar.h2relay import frames as F
from sidecar.h2relay import local_reply
from sidecar.h2relay.attempt import Attempt, Failure
from sidecar.h2relay.deadline import DEADLINE, PER_TRY, Deadline
from sidecar.h2relay.grpcwire import STATUS_BY_WIRE, STATUS_FOR_RST, MessageLimit, encode_timeout
from sidecar.h2relay.hedge import Hedge
from sidecar.h2relay.hpack_codec import Block, encode_literal
from sidecar.h2relay.replay import ReplayBuffer
from sidecar.h2relay.request import Prepared, PreparedResponse, prepare_response
from sidecar.h2relay.stepper import Stepper
from sidecar.outcome import EXPLAIN, Outcome, caller_gone, classify
from sidecar.policy import NO_TOKEN, AttemptResult, CallPolicy, CallState, Refusal, Token
from sidecar.retry.hedging import Hedging
from sidecar.tracing.context import TRACEPARENT, CallTrace, new_span_id
from sidecar.tracing.context import begin as begin_trace

if TYPE_CHECKING:  # the connection layer above, for its types only
    from collections.abc import Sized

    from sidecar.h2relay.mirror import Shadow
    from sidecar.h2relay.plane import Downstream, Plane
    from sidecar.h2relay.pool import UpstreamConnection

log = logging.getLogger(__name__)
# x-request-id: 32 hex digits like a uuid4's, a random per-process prefix and a counter
# (unique, which is all an id needs; uuid4() cost ~6 µs, 7% of a relayed call's CPU)
_ID_PREFIX = os.urandom(8).hex().encode()
_ids = itertools.count(int.from_bytes(os.urandom(4), "big"))
_TIMEOUT_NAME = b"grpc-timeout"
_REQUEST_ID = b"x-request-id"
_NONE_TRIED: frozenset[tuple[str, int]] = frozenset()
_NOTHING: tuple[()] = ()


def _new_request_id() -> bytes:
    return b"%s%016x" % (_ID_PREFIX, next(_ids))


def _response(block: Block) -> PreparedResponse:
    found = block.prepared
    if found is None:
        found = block.prepared = prepare_response(block.headers, STATUS_BY_WIRE)
    return cast(PreparedResponse, found)


class RouteView(Protocol):
    """What a call reads of its route (sidecar/route.py's `Route`)."""

    name: str
    cluster: Cluster
    default_timeout_s: float | None
    calls: CallPolicy
    per_try_timeout_s: float | None
    split: Any  # route_rules.WeightedSplit | None
    mirror: Any  # mirror.Mirror | None
    rate_limit: Any  # sidecar/ratelimit.py's InboundLimits / UpstreamLimit, or None
    hedging: Hedging | None


class Cancellable(Protocol):
    """A wait the call may stop: a loop timer, a local stream's subscription."""

    def cancel(self) -> None: ...


class LocalStream(Protocol):
    """A local method that answers with a stream (Health/Watch, wiring.py): it sends
    through `local_send` / `local_end` and leaves what to cancel when the caller goes."""

    def open(self, call: Call, body: bytes) -> Cancellable | None: ...


class Call:
    __slots__ = (
        "admitting",
        "attempt",
        "attempts",
        "calls",
        "code",
        "deadline",
        "done",
        "down",
        "down_pending",
        "final_queued",
        "hedge",
        "last",
        "local",
        "local_reason",
        "paused",
        "plane",
        "replay",
        "req",
        "req_ended",
        "req_limit",
        "request_id",
        "responded",
        "shadow",
        "sid",
        "started",
        "timer",
        "token",
        "trace",
        "tried",
        "watch",
    )  # fmt: skip

    def __init__(self, plane: Plane, down: Downstream, sid: int, req: Prepared) -> None:
        self.plane = plane
        self.down = down  # the caller's connection, `sid` our stream on it
        self.sid = sid
        route = req.route
        if route is not None and route.split is not None and req.error is None:
            # step 1: a weighted split picks one backend route per call (route_rules.py)
            req = route.split.choose(req)
            route = req.route
        self.req = req
        now = self.started = plane.clock()  # the plane's clock, all through the call
        budget: float | None = None
        if route is not None and req.error is None:
            budget = req.timeout_s if req.timeout_s is not None else route.default_timeout_s
        self.deadline = Deadline(now, budget)
        self.timer: int | None = None  # our slot in the plane's timer wheel
        self.request_id = b""
        self.replay = ReplayBuffer(plane.retry_buffer)
        self.req_ended = False  # the caller sent END_STREAM
        self.req_limit = MessageLimit(plane.max_message_bytes)
        # what the call waits on, one field per kind of wait (each cancelled on the end)
        self.admitting: Stepper | None = None  # the admission coroutine (step 4)
        # (a loop timer typed by what the call does with it: uvloop's is no asyncio one)
        self.paused: Cancellable | None = None  # a fault's delay or a retry backoff
        self.local: local_reply.LocalMethod | None = None  # answered once the request is whole
        self.watch: Cancellable | None = None  # a local stream's subscription
        self.token: Token = NO_TOKEN  # admission (inbound)
        self.calls: CallState | None = None  # the upstream's policies once the call began
        self.attempt: Attempt | None = None  # the attempt in flight (or the last one)
        # a hedged call's copies (hedge.py): `attempt` is then the one in focus
        self.hedge: Hedge | None = None
        self.attempts = 0
        self.tried: set[tuple[str, int]] | None = None  # endpoints tried by earlier attempts
        self.last: Failure | None = None  # the last failed attempt: the answer if no retry
        # answer frames held for the caller (_hold): (data, end, credit, headers)
        self.down_pending: list[tuple[bytes, bool, int, bool]] = []
        self.responded = False  # response headers went to the caller
        self.final_queued = False  # the last frame toward the caller is queued (or sent)
        self.done = False  # final status sent (or stream reset) toward the caller
        self.code = "CANCELLED"
        self.local_reason: str | None = None  # our x-sidecar-error, when we ended it
        self.shadow: Shadow | None = None  # the route's mirror's copy of this call (step 6)
        self.trace: CallTrace | None = None  # its trace context (tracing on), step 3

    # ---- 1-5: before the first attempt ------------------------------------------

    def start(self) -> None:
        req = self.req
        plane = self.plane
        plane.calls_started(self)
        tracer = plane.tracer
        if tracer is not None:
            # step 3, first: the trace's ids before anything can end the call, so that
            # refused and shed calls are traced too; only ids and a flag here, the spans
            # are built after the call, off the request path (sidecar/tracing/export.py)
            self.trace = begin_trace(req.traceparent, tracer.threshold)
        if req.error is not None:
            self.fail("INTERNAL", f"malformed gRPC request ({req.error})", "bad_request")
            return
        if req.route is None:
            local = plane.local_methods.get(req.method)
            if local is not None:
                self.local = local  # answered once the request is whole (on_data)
                return
            self.fail("UNIMPLEMENTED", local_reply.no_route(req.method), "no_route")
            return
        # 1b. Authorize the caller (inbound with `inbound.authz`, sidecar/authz/step.py).
        # After routing, because a local method (health) answers any caller; before the
        # deadline timer and admission, so a denied call holds no queue slot and costs
        # the app nothing.
        authz = plane.authz
        if authz is not None and not authz.admit(self):
            return
        self.request_id = b"" if req.has_request_id else _new_request_id()
        limiter = req.route.rate_limit
        if limiter is not None:  # step 3; the caller: its mTLS identity, for per_caller rules
            refusal = limiter.check(req.method, self.down.caller, plane.clock())
            if refusal is not None:
                self.refuse(refusal)
                return
        ends = self.deadline.ends
        if ends is not None:
            self.timer = plane.wheel.add(ends, self)
        if plane.admit_all:
            self._after_admission()
            return
        # stepped by hand: no Task unless the call really waits in the queue (stepper.py)
        stepper = self.admitting = Stepper(
            plane.loop,
            plane.admission.acquire(req.priority, ends),
            self._admitted,
            self._admission_failed,
        )
        stepper.step()

    def _admission_failed(self, exc: BaseException) -> None:
        self.admitting = None
        try:
            raise exc
        except Exception:
            self.crashed()

    def _admitted(self, admitted: object) -> None:
        self.admitting = None
        try:
            if isinstance(admitted, Refusal):
                if not self.done:
                    self.refuse(admitted)
                    self.down.kick()
                return
            token = cast(Token, admitted)
            if self.done:
                token.release(Outcome.CANCELLED, self.plane.clock())
                return
            self.token = token
            self._after_admission()
            self.down.kick()
        except Exception:
            self.crashed()

    def _after_admission(self) -> None:
        route: RouteView = self.req.route
        plane = self.plane
        fault = plane.faults.decide(plane.direction, route.name, self.req.method, plane.clock())
        if fault is not None:
            if fault.abort_status is not None and fault.delay_s <= 0:
                self.fail(fault.abort_status, local_reply.fault(route.name), "fault")
                return
            if fault.delay_s > 0:
                self.paused = plane.loop.call_later(fault.delay_s, self._wake, fault)
                return
        if self._begin():
            self.next_attempt()

    def _wake(self, fault: FaultAction | None) -> None:
        """A loop timer: a fault's delay (`fault`) or a retry's backoff ran out."""
        self.paused = None
        try:
            if self.done:
                return
            if fault is None:
                self.next_attempt()
            elif fault.abort_status is not None:
                self.fail(fault.abort_status, local_reply.fault(self.req.route.name), "fault")
            elif self._begin():
                self.next_attempt()
            self.down.kick()
        except Exception:
            self.crashed()

    # ---- 6-8: limits, attempts, retries ---------------------------------------------

    def _begin(self) -> bool:
        """The upstream's limits, one token per call held across its retries (seam a)."""
        route: RouteView = self.req.route
        state = route.calls.begin(self.plane.clock())
        if isinstance(state, Refusal):
            self.refuse(state)
            return False
        self.calls = state
        mirror = route.mirror
        if mirror is not None:  # step 6: the copy starts with what the caller sent so far
            plane = self.plane
            shadow = mirror.copy(
                plane.pool, self.req.block, self.request_id, plane.max_message_bytes
            )
            if shadow is not None:
                self.shadow = shadow
                shadow.feed(self.replay.chunks, self.req_ended)
        if route.hedging is not None:  # 7b: copies share the limits token taken here
            self.hedge = Hedge(route.hedging, self.plane.clock())
        return True

    def next_attempt(self) -> None:
        route: RouteView = self.req.route
        now = self.plane.clock()
        deadline = self.deadline
        if deadline.passed(now):
            self._stop_retrying(
                "DEADLINE_EXCEEDED", local_reply.deadline_spent(route.name), "deadline"
            )
            return
        host = route.cluster.pick(
            now, hash_key=self.req.hash_value, exclude=self.tried or _NONE_TRIED
        )
        if host is None and self.hedge is not None and self.tried:
            # 7b: a copy goes to another endpoint where there is one, else to any
            host = route.cluster.pick(now, hash_key=self.req.hash_value, exclude=_NONE_TRIED)
        if host is None:
            self._stop_retrying("UNAVAILABLE", local_reply.no_endpoints(route.name), "no_endpoints")
            return
        calls = self.calls
        assert calls is not None  # began in _begin
        refusal = calls.attempt(now)  # adaptive throttling, per attempt
        if refusal is not None:
            self._stop_retrying(refusal.status, refusal.message, refusal.reason, refusal)
            return
        up = self.plane.pool.get(host.endpoint, route.name)
        ready = up.ready and up.has_slot()
        if not ready:
            # it waits for a connection or a stream slot: bounded by limits.max_pending
            refusal = calls.pending()
            if refusal is not None:
                calls.attempt_unsent(now)
                self._stop_retrying(refusal.status, refusal.message, refusal.reason, refusal)
                return
        self.attempts += 1
        attempt = self.attempt = Attempt(self.attempts, host, now)
        attempt.pending = not ready
        if self.hedge is not None:  # 7b: a copy: its connection drives its own leg
            attempt.leg = self.hedge.add(self, attempt, now)
        if self.trace is not None:
            self.trace.attempts.append(attempt)  # one span per attempt (tracing/spans.py)
        if deadline.arm_try(now, route.per_try_timeout_s):
            self._arm()
        if ready:
            self.open_upstream(up)
        else:
            attempt.wait(up, attempt.leg or self)

    def _stop_retrying(
        self, status: str, message: str, reason: str | None, refusal: Refusal | None = None
    ) -> None:
        """No (further) attempt: the caller gets the last attempt's failure when there was
        one (a retry refused must not hide what the upstream said), else this error."""
        if self.hedge is not None and self.hedge.goes_on(self):
            return  # 7b: a copy could not go; those in flight may still answer
        if self.last is not None:
            self._answer(self.last)
        elif refusal is not None:
            self.refuse(refusal)
        else:
            self.fail(status, message, reason)

    def _attempt_failed(self, failure: Failure, reset: bool) -> None:
        """The attempt failed: report it; retry, else give the caller its answer."""
        self._detach(reset)
        self._end_attempt(failure.outcome)
        if self.done:
            return
        self.last = failure
        if not self._retry(failure):
            self._answer(failure)

    def _retry(self, failure: Failure) -> bool:
        """Start another attempt if the policy allows and nothing reached the caller."""
        if self.hedge is not None and self.attempt is not None:
            return self.hedge.failed(self, failure, self.attempt)  # 7b: A6's rules instead
        calls = self.calls
        if calls is None or self.responded or not self.replay.replayable:
            return False
        now = self.plane.clock()
        result = AttemptResult(
            attempt=self.attempts,
            status=failure.status,
            outcome=failure.outcome,
            committed=False,
            replayable=True,
            sidecar_error=failure.reason,
            pushback=failure.pushback,  # as received: garbage or negative means "stop" (A6)
            remaining_s=self.deadline.remaining(now),
        )
        backoff = calls.retry(result, now)
        if backoff is None:
            return False
        attempt = self.attempt
        if attempt is not None:
            if self.tried is None:
                self.tried = set()
            self.tried.add(attempt.host.endpoint.key)
            self.attempt = None  # the next one is a new Attempt
        if backoff > 0:
            self.paused = self.plane.loop.call_later(backoff, self._wake, None)
        else:
            self.next_attempt()
        return True

    def _end_attempt(self, outcome: Outcome) -> None:
        """Report the attempt once: its endpoint, the call policy (seam a), metrics."""
        attempt = self.attempt
        if attempt is None or not attempt.open:
            return
        now = self.plane.clock()
        attempt.end(outcome, now)
        if self.calls is not None:
            self.calls.attempt_ended(outcome, now)
        self.plane.attempt_done(self.req.route.name, attempt.address, outcome)

    def _detach(self, reset: bool) -> None:
        """The attempt leaves its connection (and gives back its max_pending slot)."""
        attempt = self.attempt
        if attempt is None:
            return
        if attempt.pending:
            attempt.pending = False
            if self.calls is not None:
                self.calls.connected()
        attempt.detach(attempt.leg or self, reset)

    def drop_attempt(self, outcome: Outcome) -> None:
        """7b: a hedge's loser: the attempt in focus leaves its connection
        (RST_STREAM(CANCEL) unless the upstream ended its side), reported with `outcome`."""
        attempt = self.attempt
        assert attempt is not None
        self._detach(reset=not attempt.ended)
        self._end_attempt(outcome)

    def answer_failure(self, failure: Failure) -> None:
        """7b: a hedge with no copy left gives the caller the last copy's answer."""
        self._answer(failure)

    def _cancel_upstream(self, outcome: Outcome) -> None:
        """Stop whatever the call waits on, and its attempt (reported with `outcome`)."""
        if self.admitting is not None:
            self.admitting.cancel()
            self.admitting = None
        if self.paused is not None:
            self.paused.cancel()
            self.paused = None
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        if self.hedge is not None:
            self.hedge.cancel(self, outcome)  # 7b: the other copies, then ours below
        attempt = self.attempt
        if attempt is not None:
            self._detach(reset=not attempt.ended)
            self._end_attempt(outcome)

    # ---- 7: the request toward the upstream (pool.UpstreamStream, driven by the connections) --

    def open_upstream(self, up: UpstreamConnection) -> None:
        """Our attempt may open its stream on `up`: headers, then the request DATA held."""
        attempt = self.attempt
        assert attempt is not None
        if attempt.pending:
            attempt.pending = False
            if self.calls is not None:
                self.calls.connected()
        block = self.req.block
        remaining = self.deadline.try_remaining(self.plane.clock())
        if remaining is not None:
            block += encode_literal(_TIMEOUT_NAME, encode_timeout(max(remaining, 0.001)))
        if self.request_id:
            block += encode_literal(_REQUEST_ID, self.request_id)
        # `x-sidecar-caller: <SPIFFE ID>` of an mTLS caller toward the app (a caller's own
        # was dropped with the hop-by-hop fields, request.py, so it cannot be forged)
        caller = self.down.caller_field
        if caller:
            block += caller
        trace = self.trace
        if trace is not None:  # the attempt's span is the upstream's parent
            span_id = attempt.span_id = new_span_id()
            block += trace.upstream_field(span_id)
        elif self.req.traceparent is not None:  # tracing off: passed on as it came
            block += encode_literal(TRACEPARENT, self.req.traceparent)
        replay = self.replay
        chunks = replay.replay()
        credit = replay.release_credit()
        stream = attempt.leg or self
        attempt.open_stream(up, stream, block, self.req_ended and not chunks)
        if chunks:
            last = len(chunks) - 1
            for i, chunk in enumerate(chunks):
                freed = attempt.send(
                    stream, chunk, self.req_ended and i == last, credit if i == last else 0
                )
                if freed:
                    self.down.conn.consumed(self.sid, freed)
        elif credit:
            self.down.conn.consumed(self.sid, credit)
        if self.req_ended and not attempt.queued:
            up.write_now()  # a whole request: on its way now, not after the rest of the read
        else:
            up.kick()

    @property
    def up_pending(self) -> Sized:
        """Request DATA waiting for the upstream's window (pool.UpstreamStream)."""
        attempt = self.attempt
        return _NOTHING if attempt is None else attempt.queued

    def flush_up(self) -> None:
        """The upstream stream's window grew: send what waits."""
        attempt = self.attempt
        if attempt is None or attempt.up is None:
            return
        credit = attempt.flush(attempt.leg or self)
        if credit:
            self.down.conn.consumed(self.sid, credit)
        if not attempt.queued:
            self.down.kick()

    def on_data(self, data: bytes, end_stream: bool, flow: int) -> None:
        """Request DATA from the caller."""
        if self.done:
            self.down.conn.consumed(self.sid, flow)
            return
        if end_stream:
            self.req_ended = True
        if data and not self.req_limit.feed(data):
            self.down.conn.consumed(self.sid, flow)
            limit = self.plane.max_message_bytes
            message = local_reply.too_large("request", limit)
            self.fail("RESOURCE_EXHAUSTED", message, "message_too_large")
            return
        if self.shadow is not None:
            self.shadow.feed([data], end_stream)
        if self.hedge is not None and self.hedge.on_request_data(self, data, end_stream, flow):
            return  # 7b: to every copy in flight
        attempt = self.attempt
        if attempt is not None and attempt.sid and attempt.up is not None:
            up = attempt.up
            self.replay.keep(data)  # a copy for a replay, up to the retry buffer
            freed = attempt.send(attempt.leg or self, data, end_stream, flow)
            if freed:
                self.down.conn.consumed(self.sid, freed)
            if end_stream and not attempt.queued:
                up.write_now()  # the request is whole: send it before reading on
            else:
                up.kick()
            return
        # no upstream stream yet (admission, connecting, between attempts): hold it, and
        # credit the window only once it is sent, so a caller cannot outrun us
        self.replay.hold(data, flow)
        if end_stream and self.local is not None:
            self._answer_locally()

    def on_reset(self, code: int) -> None:
        """The caller reset its stream: cancel upstream; at the deadline that is a timeout."""
        self.done = True
        self.code = "CANCELLED"
        self._cancel_upstream(caller_gone(self.started, self.deadline.ends, self.plane.clock()))
        self._finish_call()

    # ---- 8-9: what the upstream says ------------------------------------------------

    def on_up_headers(self, block: Block, end_stream: bool) -> None:
        resp = _response(block)
        attempt = self.attempt
        assert attempt is not None
        if not end_stream:  # response headers: the call is committed to this attempt
            if self.done:
                return
            if self.hedge is not None:
                self.hedge.commit(self, attempt)  # 7b: this copy answered first
            self.responded = True
            self.replay.give_up()
            attempt.answering(self.plane.max_message_bytes)
            self._to_down(resp.block, False, 0, True)
            return
        attempt.ended = True
        status = resp.status or "UNKNOWN"
        if (
            status == "DEADLINE_EXCEEDED"
            and resp.peer_error is None
            and self.deadline.expired(self.plane.clock())
        ):
            # the peer gave up on the budget we sent it as our own timer was due: our
            # timeout (retried like one our timer caught), not the app's answer
            if self.deadline.try_ends is not None:
                self._per_try_timeout()
            else:
                self._deadline_passed()
            return
        if (
            status != "OK"
            and not self.responded
            and self.replay.replayable
            and self.calls is not None
        ):
            # a trailers-only error: nothing went to the caller, so it may be retried
            self._attempt_failed(attempt.rejected(resp), reset=not self.req_ended)
            return
        outcome = classify(status, resp.peer_error)
        if self.hedge is not None:
            self.hedge.commit(self, attempt)  # 7b: its final status is the answer
        if not self.done:
            self.responded = True
            self.code = status
            self.final_queued = True
            self._to_down(resp.block, True, 0, True)  # out to the caller first...
        up = attempt.up
        if up is not None:
            # ...its bookkeeping once this read is done (Pool.settle): the other answers
            # in the read go out before it, not after every earlier answer's bookkeeping
            up.pool.answered.append((self, outcome))
            return
        self.settle(outcome)

    def on_up_data(self, data: bytes, end_stream: bool, flow: int) -> None:
        attempt = self.attempt
        assert attempt is not None
        up = attempt.up
        if self.done or up is None:
            if up is not None:
                up.conn.consumed(attempt.sid, flow)
            return
        limit = attempt.resp_limit
        if data and limit is not None and not limit.feed(data):
            up.conn.consumed(attempt.sid, flow)
            self._end_attempt(Outcome.SUCCESS)
            message = local_reply.too_large("response", self.plane.max_message_bytes)
            self.fail("RESOURCE_EXHAUSTED", message, "message_too_large")
            return
        self._to_down(data, end_stream, flow, False)

    def on_up_reset(self, code: int) -> None:
        """The upstream reset our stream."""
        attempt = self.attempt
        assert attempt is not None
        if code == F.CANCEL and not self.done and self.deadline.expired(self.plane.clock()):
            # grpc-go's server ends a call whose budget (the grpc-timeout we sent) ran out
            # with RST_STREAM(CANCEL) and no status, and that can beat our own timer, which
            # fires up to a tick late (timers.py): it is our timeout, as an expired peer's
            # DEADLINE_EXCEEDED is in on_up_headers. Relayed as it came, the caller would
            # see CANCELLED, and breaker and EWMA a cancel instead of a timeout.
            attempt.ended = True
            if self.deadline.try_ends is not None:
                self._per_try_timeout()
            else:
                self._deadline_passed()
            return
        status = STATUS_FOR_RST.get(code, "INTERNAL")
        if code == F.REFUSED_STREAM and not self.responded:
            self._attempt_failed(attempt.refused(self._target(), "refused the stream"), False)
            return
        if self.hedge is not None and not self.done:
            # 7b: one copy reset before the call committed: A6's rules say what follows
            message = f"upstream reset the stream (HTTP/2 error {code})"
            self._attempt_failed(Failure(status, classify(status), None, message), False)
            return
        self._detach(reset=False)
        self._end_attempt(classify(status))
        if self.done:
            return
        if self.responded or code == F.CANCEL:
            self.down.conn.reset(self.sid, code)  # relay the RST as it came
            self.done = True
            self.code = status
            self._finish_call()
            # this runs on the upstream connection's read: the caller's connection must be
            # told to write, or the RST waits for other traffic on it (a caller without a
            # deadline of its own hung until then)
            self.down.kick()
        else:
            self.fail(status, f"upstream reset the stream (HTTP/2 error {code})", None)

    def on_up_lost(self, why: str, connect: bool) -> None:
        """The pooled connection failed (or never connected) under this call."""
        if self.done:
            self._end_attempt(Outcome.CANCELLED)
            return
        attempt = self.attempt
        assert attempt is not None
        self._attempt_failed(attempt.lost(self._target(), why, connect), reset=False)
        self.down.kick()

    def on_up_refused(self) -> None:
        """GOAWAY said the peer never processed our stream: always safe to replay."""
        attempt = self.attempt
        assert attempt is not None
        self._attempt_failed(attempt.refused(self._target(), "peer went away"), reset=False)
        self.down.kick()

    def settle(self, outcome: Outcome) -> None:
        """The bookkeeping of a call whose final status came from its upstream: the
        attempt's report (breaker, EWMA, throttling, metrics), then the call's end."""
        self._end_attempt(outcome)
        if not self.done:
            self._close_down()

    # ---- 2 again: the call's one timer ----------------------------------------------

    def _arm(self) -> None:
        """(Re)set the call's one wheel slot to the deadline's `next_fire()`."""
        when = self.deadline.next_fire()
        wheel = self.plane.wheel
        if self.timer is not None:
            wheel.remove(self.timer, self)
        self.timer = None if when is None else wheel.add(when, self)

    def fire(self) -> None:
        """The wheel's callback (timers.Target): the call's slot came."""
        self.timer = None
        try:
            if self.done:
                return
            attempt = self.attempt
            ring = self.deadline.ring(self.plane.clock(), attempt is not None and attempt.open)
            if ring == DEADLINE:
                self._deadline_passed()
            elif ring == PER_TRY:
                self._per_try_timeout()
            else:
                self._arm()  # sleep on to what is left
        except Exception:
            self.crashed()

    def _per_try_timeout(self) -> None:
        """`per_try_timeout_ms` ran out on this attempt: DEADLINE_EXCEEDED with
        `x-sidecar-error: timeout`, retried only if `retries.on` lists it; the breaker
        and EWMA see a TIMEOUT."""
        attempt = self.attempt
        assert attempt is not None
        self.deadline.end_try()
        failure = attempt.timed_out(self._target())
        self._detach(reset=not attempt.ended)
        self._end_attempt(Outcome.TIMEOUT)
        self.last = failure
        if not self._retry(failure):
            self._answer(failure)
        elif not self.done and self.timer is None and self.deadline.ends is not None:
            self._arm()  # a backoff before the next attempt: the deadline still holds
        self.down.kick()

    def _deadline_passed(self) -> None:
        """The call's budget is spent: `timeout` if an attempt was waiting on the
        endpoint (the breaker and EWMA then see a TIMEOUT), else `deadline`."""
        self.timer = None
        if self.done:
            return
        attempt = self.attempt
        waiting = attempt is not None and attempt.open
        if not waiting and self.last is not None:
            self._answer(self.last)  # waiting to retry when the time ran out
            self.down.kick()
            return
        if attempt is not None and waiting:
            reason = "timeout"
            message = f"{EXPLAIN['timeout']} {self._target()} at {attempt.address}"
        else:
            reason = "deadline"
            message = local_reply.deadline_spent(self.req.route.name)
        self._cancel_upstream(Outcome.TIMEOUT)
        self.fail("DEADLINE_EXCEEDED", message, reason)
        self.down.kick()

    # ---- 9: toward the caller -------------------------------------------------------

    def _to_down(self, data: bytes, end_stream: bool, flow: int, is_headers: bool) -> None:
        down = self.down
        if self.down_pending or (down.write_paused and not is_headers):
            # behind answer frames already held, or the caller is not reading its socket
            # (CVE-2019-9517): held, not written
            self._hold(data, end_stream, flow, is_headers)
            return
        if is_headers:
            down.conn.send_headers(self.sid, data, end_stream)
        else:
            sent = down.conn.send_data(self.sid, data, end_stream)
            if sent < len(data):
                self._hold(data[sent:], end_stream, flow, False)
                down.kick()
                return
            attempt = self.attempt
            if flow and attempt is not None and attempt.up is not None:
                attempt.up.conn.consumed(attempt.sid, flow)
        if end_stream:
            down.write_now()  # the answer is whole: to the caller before the next is read
        else:
            down.kick()

    def _hold(self, data: bytes, end_stream: bool, flow: int, is_headers: bool) -> None:
        """Answer bytes the caller cannot take yet, held. The pooled connection's window
        is credited now and the upstream stream's once they move on: a caller that does
        not read stalls its own streams (each holds at most the stream window we give
        the endpoint), never the other callers' calls on the pooled connection; a
        caller that holds over `max_buffered_bytes` and takes none of it has them reset
        (Downstream.sweep)."""
        if not is_headers:
            attempt = self.attempt
            if flow and attempt is not None and attempt.up is not None:
                attempt.up.conn.credit_connection(flow)
            self.down.hold(len(data))
        self.down_pending.append((data, end_stream, flow, is_headers))
        self.down.blocked.add(self)

    def _drop_down_pending(self) -> None:
        """The answer frames held for a stream that ended: forgotten."""
        held = sum([len(data) for data, _, _, is_headers in self.down_pending if not is_headers])
        self.down_pending = []
        self.down.blocked.discard(self)
        self.down.release(held, False)

    def flush_down(self) -> None:
        """The caller's window grew, or its socket drained: send what waits."""
        down = self.down
        pending = self.down_pending
        while pending:
            data, end_stream, flow, is_headers = pending[0]
            if is_headers:
                down.conn.send_headers(self.sid, data, end_stream)
            else:
                if down.write_paused:
                    return
                sent = down.conn.send_data(self.sid, data, end_stream)
                down.release(sent, True)
                if sent < len(data):
                    pending[0] = (data[sent:], end_stream, flow, False)
                    return
                attempt = self.attempt
                if flow and attempt is not None and attempt.up is not None:
                    # the stream's half of the credit (the connection's went in _hold)
                    attempt.up.conn.credit_stream(attempt.sid, flow)
                    attempt.up.kick()
            pending.pop(0)
        down.blocked.discard(self)
        if self.final_queued and not self.done:
            self._close_down()

    def _close_down(self) -> None:
        """The final frame went (or is queued behind data) to the caller."""
        if self.down_pending:
            return  # flush_down calls back when the trailers are out
        self.done = True
        attempt = self.attempt
        if attempt is not None:
            self._detach(reset=not (self.req_ended and not attempt.queued))
        self._finish_call()

    # ---- what the sidecar answers itself (local_reply.py) ---------------------------

    def _target(self) -> str:
        route = self.req.route
        return local_reply.target(self.plane.direction, "-" if route is None else route.name)

    def refuse(self, refusal: Refusal) -> None:
        self.fail(
            refusal.status, refusal.message, refusal.reason, local_reply.refusal_extra(refusal)
        )

    def _answer(self, failure: Failure) -> None:
        """The caller gets a failed attempt's answer: the upstream's own, or ours."""
        if failure.block is None:
            self.fail(failure.status, failure.message, failure.reason)
        else:
            self.fail(failure.status, "", None, block=failure.block)

    def fail(
        self,
        status: str,
        message: str,
        reason: str | None,
        extra: tuple[tuple[str, str], ...] = (),
        block: bytes | None = None,
    ) -> None:
        """End the call toward the caller with a sidecar-made status (or, `block`, an
        upstream's trailers-only answer kept from an earlier attempt)."""
        if self.done:
            return
        self._cancel_upstream(Outcome.CANCELLED)
        self._drop_down_pending()
        if block is None:
            block = local_reply.status_block(status, message, reason, self.responded, extra)
        self.responded = True
        self.down.conn.send_headers(self.sid, block, True)
        self.code = status
        self.local_reason = reason
        self.done = True
        self._finish_call()
        self.down.kick()

    def _answer_locally(self) -> None:
        handler = self.local
        assert handler is not None
        self.local = None
        body = self.replay.body()
        conn = self.down.conn
        conn.consumed(self.sid, self.replay.release_credit())
        request = local_reply.unframed(body)
        if getattr(handler, "streaming", False):
            # a server stream answered by the sidecar (Health/Watch): it sends through
            # local_send / local_end and leaves a subscription to cancel
            self.watch = cast(LocalStream, handler).open(self, request)
            return
        status, message, reply = handler(request)
        if status != "OK" or reply is None:
            self.fail(status, message, None)
            return
        conn.send_headers(self.sid, local_reply.HEADERS, False)
        conn.send_data(self.sid, local_reply.framed(reply), False)
        conn.send_headers(self.sid, local_reply.OK_TRAILERS, True)
        self.responded = self.done = True
        self.code = "OK"
        self._finish_call()

    def local_send(self, message: bytes) -> None:
        """One message of a stream the sidecar answers itself (headers go first)."""
        if self.done:
            return
        if not self.responded:
            self.responded = True
            self._to_down(local_reply.HEADERS, False, 0, True)
        self._to_down(local_reply.framed(message), False, 0, False)

    def local_end(self, status: str, message: str) -> None:
        """End a stream the sidecar answers itself."""
        if self.done:
            return
        self.watch = None
        if not self.responded:
            self.fail(status, message, None)
            return
        self.code = status
        self.final_queued = True
        self._to_down(local_reply.status_block(status, message, None, True), True, 0, True)
        self._close_down()
        self.down.kick()

    # ---- 10: the end of a call: its one report, and a bug of ours -------------------

    def _finish_call(self) -> None:
        """Forget the caller's stream; report the call (metrics, the tokens), once."""
        down = self.down
        if down.calls.pop(self.sid, None) is None:
            return
        if self.down_pending:  # reset with answer bytes still held
            self._drop_down_pending()
        if self.req_ended:
            down.conn.close_stream(self.sid)
        else:
            down.conn.reset(self.sid, F.NO_ERROR if self.responded else F.CANCEL)
        if self.timer is not None:
            self.plane.wheel.remove(self.timer, self)
            self.timer = None
        calls = self.calls
        if calls is not None:
            self._end_attempt(Outcome.CANCELLED)  # no-op unless one is still open
            calls.release(classify(self.code), self.plane.clock())  # exactly once
            self.calls = None
        if self.token is not NO_TOKEN:
            self.token.release(classify(self.code), self.plane.clock())
            self.token = NO_TOKEN
        if self.shadow is not None:
            self.shadow.abandon()  # unsent only if the request never came whole
            self.shadow = None
        self.plane.call_done(self)
        trace = self.trace
        if trace is not None and (trace.sampled or self.code != "OK"):
            # sampled or failed: kept for export, its spans built off the request path
            self.plane.tracer.record(self)

    def crashed(self) -> None:
        """A bug of ours inside this call (the caller of this method caught it): log it,
        answer INTERNAL with `x-sidecar-error: internal`, keep the connection."""
        from sidecar.access_log import call_context  # the ids of the call, for the log line

        log.exception(
            "%s call %s failed inside the sidecar",
            self.plane.direction,
            self.req.method,
            extra=call_context(self),
        )
        try:
            if not self.done:
                self.fail("INTERNAL", local_reply.INTERNAL, "internal")
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

    def __repr__(self) -> str:
        return (
            f"Call({self.req.method} stream={self.sid} attempts={self.attempts} "
            f"{self.deadline!r} done={self.done})"
        )
