"""The story of one call through the sidecar, first byte to last status.

Does I/O through `forward` and the seams; every decision is made by a policy object.
The same pipeline serves both listeners: outbound (the local app calling a peer,
`route.name` = the upstream) and inbound (a peer calling the local app, `route.name`
= "app", a one-endpoint cluster), and the in-process client (sidecar/client), which
runs steps 1-7 inside the calling app. The caller is a `Caller` (sidecar/proxy/forward.py):
a grpcio server context on the listeners, the client's own call object in-process;
`answer()` runs steps 1-7 and `call()` adds step 8 for a server context.

The steps, and why each sits where it sits:

1. Route. The method path names the upstream (sidecar/route.py), resolved once
   per method when grpcio asks for a handler. First, because every later step is per
   upstream: its deadline default, its limits, its endpoints. No route: UNIMPLEMENTED.
2. Deadline. The caller's remaining time, else the upstream's `timeout_ms`, fixed as an
   absolute time now. Before admission, faults and retries, because each of them spends
   from this one budget; every attempt then forwards only what is left, so this hop's
   own time is subtracted (and the whole call, retries included, stays bounded).
3. Headers. Hop-by-hop keys dropped, `x-request-id` added when missing. Before any
   early refusal, so even a refused call's logs carry its request id.
4. Admit (seam b, inbound). Concurrency limit and queue in front of the app, by the
   caller's `x-sidecar-priority`. After the deadline, because the queue drops work whose
   caller has given up; before any upstream work, because a dropped call must cost
   almost nothing (and must never reach the app).
5. Fault (seam c). Injected delay or abort per upstream. After admission, so faults
   behave like a slow or failing upstream to the caller; before the attempts, so an
   injected abort consumes no upstream limit or endpoint.
6. Begin (seam a): the upstream's limits, one token per call held across its retries
   (attempts of one call never overlap). Before the first pick, so an overloaded
   upstream costs no balancer work.
7. Attempts, each:
   a. pick an endpoint, excluding ones already tried (another site once the local one
      is used up). First, so a call with nowhere to go says `no_endpoints`;
   b. ask (seam a) whether to send it: adaptive throttling, per attempt because retries
      load the upstream too; after the pick, so a refusal leaves no host started;
   c. forward raw bytes over the endpoint's pooled channel (sidecar/proxy/forward.py),
      or a unary attempt over the pooled entry's wire when it has one (the in-process
      client's: sidecar/client/wire.py), bounded by the per-try timeout and the call's
      deadline; a request stream is read
      through a replay buffer (`retries.buffer_bytes`) so a retry can resend it. While
      the channel is still connecting the attempt waits for it holding one of the
      upstream's `limits.max_pending` slots (none left: fail fast, `overloaded`), so a
      peer that accepts slowly cannot pile up calls here;
   d. classify the result once (sidecar/outcome.py), telling local failures (connect,
      per-try timeout, deadline spent waiting) from the peer's answer;
   e. report: `host.finish(...)` (breaker, EWMA) and the policy told, exactly once, in a
      `finally`, so a cancelled call is reported too;
   f. retry (seam a) on another endpoint, only while nothing went back to the caller and
      the request is still in hand, after the policy's backoff (or the peer's
      pushback), never past the deadline, within the retry budget.
8. Deliver. Headers, response, status, details and trailers (with
   `grpc-status-details-bin` untouched) to the caller; metrics recorded first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from sidecar import metrics
from sidecar.cells import HistogramCells, counter_cell
from sidecar.outcome import EXPLAIN, SIDECAR_ERROR_KEY, Outcome, caller_gone, classify
from sidecar.policy import (
    NO_TOKEN,
    Admission,
    AdmitAll,
    AttemptResult,
    CallState,
    FaultInjector,
    NoFaults,
    Refusal,
    Token,
)
from sidecar.proxy.channels import ChannelPool, PooledChannel
from sidecar.proxy.forward import Answer, Caller, forward
from sidecar.proxy.headers import (
    Pairs,
    forwardable,
    local_reason,
    sidecar_error,
    value_of,
    with_request_id,
)
from sidecar.proxy.replay import RequestStream
from sidecar.route import Route
from sidecar.shedding import PRIORITY_KEY

log = logging.getLogger(__name__)

_STREAMS_IN = frozenset({"client_stream", "bidi"})


_CHILDREN_MAX = 10_000  # label sets cached per metric (past it: looked up each time)


class _Children:
    """One metric's labelled children for one direction, each looked up once and used
    as this pipeline's own lock-free cells (sidecar/cells.py): `labels()` validates and
    joins its labels and takes a lock, and so does every update of a child."""

    __slots__ = ("_cache", "_direction", "_metric", "_wrap")

    def __init__(self, metric: Any, direction: str, wrap: Callable[[Any], Any]) -> None:
        self._metric = metric
        self._direction = direction
        self._wrap = wrap
        self._cache: dict[tuple[str, ...], Any] = {}

    def get(self, *labels: str) -> Any:
        child = self._cache.get(labels)
        if child is None:
            child = self._metric.labels(self._direction, *labels)
            if len(self._cache) < _CHILDREN_MAX:  # past it: the locked child, uncached
                child = self._cache[labels] = self._wrap(child) or child
        return child


def _local(code: grpc.StatusCode, reason: str, message: str, extra: Pairs = ()) -> Answer:
    return Answer(code, message, (), (*extra, *sidecar_error(reason)), local_reason=reason)


class Pipeline:
    def __init__(
        self,
        direction: str,
        pool: ChannelPool,
        *,
        admission: Admission | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.direction = direction
        self.pool = pool
        self.admission: Admission = admission or AdmitAll()
        self._admit_all = type(self.admission) is AdmitAll  # no wait, no token to release
        self.faults: FaultInjector = faults or NoFaults()
        self._in_flight = _Children(metrics.IN_FLIGHT, direction, counter_cell)
        self._requests = _Children(metrics.REQUESTS, direction, counter_cell)
        self._duration = _Children(metrics.DURATION, direction, HistogramCells.of)
        self._attempts_total = _Children(metrics.ATTEMPTS, direction, counter_cell)

    async def call(
        self,
        route: Route | None,
        method: str,
        kind: str,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bytes | None:
        """Handle one call end to end; the return value is the unary response, if any."""
        answer = await self.answer(route, method, kind, request, context)
        # 8. Deliver.
        return await _deliver(answer, context)

    async def answer(
        self, route: Route | None, method: str, kind: str, request: Any, caller: Caller
    ) -> Answer:
        """Steps 1-7 with metrics: the answer to deliver. A streamed response has already
        gone to `caller` as it arrived (`answer.committed`)."""
        started = time.monotonic()
        upstream = route.name if route is not None else "-"
        label_method = method if route is not None else "-"
        in_flight = self._in_flight.get(upstream)
        in_flight.inc(1)
        code = "CANCELLED"  # what the metrics say if the caller goes away mid-call
        try:
            try:
                answer = await self._steps(route, method, kind, request, caller, started)
            except Exception:
                log.exception("%s call %s failed inside the sidecar", self.direction, method)
                answer = _local(
                    grpc.StatusCode.INTERNAL,
                    "internal",
                    "the sidecar failed while handling this call (see its log)",
                )
            code = answer.code.name
            if answer.local_reason is not None:
                metrics.LOCAL_ERRORS.labels(self.direction, upstream, answer.local_reason).inc()
        finally:
            in_flight.inc(-1)
            self._requests.get(upstream, label_method, code).inc(1)
            self._duration.get(upstream, label_method).observe(time.monotonic() - started)
        return answer

    async def _steps(
        self,
        route: Route | None,
        method: str,
        kind: str,
        request: Any,
        context: Caller,
        started: float,
    ) -> Answer:
        # 1. Route.
        if route is None:
            return _local(
                grpc.StatusCode.UNIMPLEMENTED,
                "no_route",
                f"sidecar has no route for method {method}: no upstream lists its service "
                f"in grpc_services (check the sidecar config)",
            )
        # 2. Deadline.
        remaining = context.time_remaining()
        if remaining is None:
            remaining = route.default_timeout_s
        deadline = None if remaining is None else started + remaining
        # 3. Headers.
        metadata, _request_id = with_request_id(forwardable(context.invocation_metadata()))
        # 4. Admit.
        admitted: Token = NO_TOKEN
        if not self._admit_all:
            priority = value_of(metadata, PRIORITY_KEY)
            got = await self.admission.acquire(
                priority if isinstance(priority, str) else None, deadline
            )
            if isinstance(got, Refusal):
                return _refused(got)
            admitted = got
        outcome = Outcome.CANCELLED
        try:
            # 5. Fault.
            fault = self.faults.decide(self.direction, route.name, method, time.monotonic())
            if fault is not None:
                if fault.delay_s > 0:
                    await asyncio.sleep(_bounded(fault.delay_s, deadline))
                if fault.abort_status is not None:
                    return _local(
                        grpc.StatusCode[fault.abort_status],
                        "fault",
                        f"fault injected by the sidecar for upstream {route.name} "
                        f"(its faults config, or POST /faults on the admin port)",
                    )
            # 6. Begin.
            call = route.calls.begin(time.monotonic())
            if isinstance(call, Refusal):
                return _refused(call)
            stream = None
            if kind in _STREAMS_IN and route.replay_bytes > 0:
                stream = RequestStream(request, route.replay_bytes)
            try:
                # 7. Attempts.
                answer, outcome = await self._attempts(
                    route, call, method, kind, stream or request, context, metadata, deadline
                )
            finally:
                call.release(outcome, time.monotonic())
                if stream is not None:
                    stream.close()
            return answer
        finally:
            admitted.release(outcome, time.monotonic())

    async def _attempts(
        self,
        route: Route,
        call: CallState,
        method: str,
        kind: str,
        request: Any,
        context: Caller,
        metadata: Pairs,
        deadline: float | None,
    ) -> tuple[Answer, Outcome]:
        hash_value = value_of(metadata, route.hash_key) if route.hash_key else None
        hash_key = hash_value.encode() if isinstance(hash_value, str) else hash_value
        stream = request if isinstance(request, RequestStream) else None
        tried: set[tuple[str, int]] = set()
        last: tuple[Answer, Outcome] | None = None
        attempt = 0
        while True:
            attempt += 1
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return last or (
                    _local(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        "deadline",
                        f"deadline spent before the sidecar could call {route.name} "
                        f"(raise the caller's deadline or the upstream's timeout_ms)",
                    ),
                    Outcome.CANCELLED,
                )
            # 7a. Pick.
            host = route.cluster.pick(now, hash_key=hash_key, exclude=tried)
            if host is None:
                return last or (
                    _local(
                        grpc.StatusCode.UNAVAILABLE,
                        "no_endpoints",
                        f"upstream {route.name} has no endpoint to call "
                        f"(check its endpoints or discovery, and /clusters on the admin port)",
                    ),
                    Outcome.CANCELLED,
                )
            # 7b. Ask.
            refusal = call.attempt(now)
            if refusal is not None:
                return last or (_refused(refusal), Outcome.CANCELLED)
            address = host.endpoint.address
            ends = deadline
            if route.per_try_timeout_s is not None:
                try_ends = now + route.per_try_timeout_s
                ends = try_ends if ends is None else min(ends, try_ends)
            host.start(now)
            outcome = Outcome.CANCELLED
            answered = False
            refused: Refusal | None = None
            pooled = self.pool.acquire(address, now)
            try:
                # 7c. Forward (once connected, or failing fast past max_pending). A unary
                # attempt goes over the endpoint's wire when the pool has one (the
                # in-process client's), which waits for its connection itself.
                wire = pooled.wire if kind == "unary" else None
                if wire is None:
                    state = pooled.channel.get_state(try_to_connect=True)
                    if state in _CONNECTING:
                        refused = await _connection(pooled, state, call, ends)
                if refused is None:
                    timeout = None if ends is None else max(0.001, ends - time.monotonic())
                    if wire is not None:
                        got = await wire.unary(call, method, request, metadata, timeout)
                    else:
                        body = stream.replay() if stream is not None else request
                        got = await forward(kind, pooled, method, body, context, metadata, timeout)
                    if isinstance(got, Refusal):
                        refused = got
                    else:
                        answer = got
                        answered = True
                        # 7d. Classify.
                        outcome = (
                            Outcome.SUCCESS
                            if answer.code is grpc.StatusCode.OK
                            else self._classify(answer, route, address, ends)
                        )
            finally:
                # 7e. Report.
                end = time.monotonic()
                self.pool.release(pooled, end)
                if not answered and refused is None:
                    # cancelled: as the time ran out (grpcio cancels a handler at its
                    # caller's deadline) that means the endpoint did not answer in time
                    outcome = caller_gone(now, ends, end)
                host.finish(outcome, end - now, end)  # a refusal (CANCELLED) says nothing
                if refused is None:
                    call.attempt_ended(outcome, end)
                    self._attempts_total.get(route.name, address, outcome.value).inc(1)
                else:
                    call.attempt_unsent(end)
            if refused is not None:
                return last or (_refused(refused), Outcome.CANCELLED)
            last = (answer, outcome)
            if answer.code is grpc.StatusCode.OK:
                return last
            # 7f. Retry.
            result = AttemptResult(
                attempt=attempt,
                status=answer.code.name,
                outcome=outcome,
                committed=answer.committed,
                replayable=stream.replayable if stream is not None else kind not in _STREAMS_IN,
                sidecar_error=_str_or_none(value_of(answer.trailers, SIDECAR_ERROR_KEY)),
                pushback=value_of(answer.trailers, "grpc-retry-pushback-ms"),
                remaining_s=None if deadline is None else deadline - end,
            )
            if result.committed or not result.replayable:
                return last
            backoff = call.retry(result, end)
            if backoff is None:
                return last
            tried.add(host.endpoint.key)
            if backoff > 0:
                await asyncio.sleep(_bounded(backoff, deadline))

    def _classify(
        self, answer: Answer, route: Route, address: str, deadline: float | None
    ) -> Outcome:
        """The one verdict on this attempt; marks locally made errors as the sidecar's."""
        code = answer.code.name
        reason = local_reason(
            code,
            answer.details,
            got_headers=bool(answer.headers),
            deadline_passed=deadline is not None and time.monotonic() >= deadline - 0.001,
        )
        peer_error = value_of(answer.trailers, SIDECAR_ERROR_KEY)
        if reason is None or peer_error is not None:
            return classify(code, None if peer_error is None else str(peer_error))
        answer.trailers = (*answer.trailers, *sidecar_error(reason))
        answer.local_reason = reason
        target = "the local app" if self.direction == "inbound" else f"upstream {route.name}"
        answer.details = f"{EXPLAIN[reason]} {target} at {address}: {answer.details}"
        if reason == "connect_failed":
            return Outcome.CONNECT_FAILED
        if reason == "timeout":
            return Outcome.TIMEOUT
        return classify(code, None)


def _refused(refusal: Refusal) -> Answer:
    extra: Pairs = ()
    if refusal.pushback_ms is not None:
        extra = (("grpc-retry-pushback-ms", str(refusal.pushback_ms)),)
    return _local(grpc.StatusCode[refusal.status], refusal.reason, refusal.message, extra)


# Channel states in which a call would wait for the connection (READY sends at once;
# TRANSIENT_FAILURE fails the call at once as a connect failure).
_CONNECTING = frozenset({grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.CONNECTING})


async def _connection(
    pooled: PooledChannel, state: grpc.ChannelConnectivity, call: CallState, ends: float | None
) -> Refusal | None:
    """The endpoint's channel is connecting (`state`): wait until it has left that,
    counted against the upstream's `limits.max_pending` (Envoy's pending requests); a
    refusal when full."""
    channel = pooled.channel
    refusal = call.pending()
    if refusal is not None:
        return refusal
    try:
        while state in _CONNECTING:
            left = None if ends is None else ends - time.monotonic()
            if left is not None and left <= 0:
                break  # the attempt then ends as a timeout, like a hung peer
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), left)
            except TimeoutError:
                break
            state = channel.get_state(try_to_connect=True)
    finally:
        call.connected()
    return None


def _bounded(delay_s: float, deadline: float | None) -> float:
    if deadline is None:
        return delay_s
    return max(0.0, min(delay_s, deadline - time.monotonic()))


def _str_or_none(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return None if value is None else str(value)


async def _deliver(answer: Answer, context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    await answer.complete()
    if answer.headers and not answer.committed:
        await context.send_initial_metadata(answer.headers)
    if answer.code is grpc.StatusCode.OK:
        context.set_trailing_metadata(answer.trailers)
        return answer.response
    # abort() wants a tuple (grpc.aio.Metadata makes the caller see UNKNOWN: FACTS.md)
    await context.abort(answer.code, answer.details, tuple(answer.trailers))
    return None
