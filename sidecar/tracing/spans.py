"""OpenTelemetry spans from what a finished call recorded (sidecar/tracing/context.py).

Pure (no I/O); runs on the exporter's thread (export.py), never on the request path.
Each relayed call gives, by OpenTelemetry's semantic conventions for RPC
(https://opentelemetry.io/docs/specs/semconv/rpc/grpc/):
- one span for the call: SERVER on an inbound listener (the call the app's peer made),
  CLIENT on an outbound listener (the logical call the local app made), its parent the
  caller's `traceparent` span when there was one;
- one CLIENT child span per attempt (per upstream stream), whose id went upstream as
  `traceparent`'s parent, so the next hop's server span hangs below the attempt.
Names are `{rpc.service}/{rpc.method}`. A retry shows as a `retry` event on the call's
span and as one more attempt span; a sidecar-made failure (breaker, shed, drop, deadline,
no endpoints) as attribute `sidecar.error` and an event naming the `x-sidecar-error`
reason, on the span of whatever made it (the attempt, or the call when no attempt did).
"""

from __future__ import annotations

from typing import Any

from hpack import Decoder
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from sidecar.h2relay.grpcwire import STATUS_CODES
from sidecar.tracing.context import new_span_id

# A server span is an error only for these codes: the others are the app's answers
# (semantic conventions for gRPC, "gRPC status")
_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
SCOPE = InstrumentationScope("sidecar.h2relay")


class Finished:
    """What export needs of a finished relay call, taken on the loop (cheap: references)."""

    __slots__ = (
        "attempts", "block", "code", "direction", "ended", "local", "method", "peer",
        "reason", "request_id", "started", "trace", "upstream",
    )  # fmt: skip

    def __init__(self, call: Any, now: float) -> None:
        req = call.req
        self.trace = call.trace
        self.attempts = list(call.trace.attempts)
        self.direction: str = call.plane.direction
        self.method: str = req.method
        self.upstream: str | None = req.route.name if req.route is not None else None
        self.started: float = call.started
        self.ended = now
        self.code: str = call.code
        self.reason: str | None = call.local_reason
        self.request_id: bytes = call.request_id  # ours, else in the caller's block
        self.block: bytes = req.block
        self.peer: str = getattr(call.down, "peer", "") or _address(call.down, "peername")
        self.local = _address(call.down, "sockname")  # the listener's address


def _address(down: Any, which: str) -> str:
    """The caller's address (`peername`; a listener with an access log keeps it already)
    or ours (`sockname`): read only for a call that is exported, never per call."""
    transport = getattr(down, "transport", None)
    found = transport.get_extra_info(which) if transport is not None else None
    if isinstance(found, tuple) and len(found) >= 2:
        return f"{found[0]}:{found[1]}"
    return ""


def _split_method(path: str) -> tuple[str, str]:
    service, _, method = path.lstrip("/").partition("/")
    return service or "-", method or "-"


def _hostport(address: str) -> tuple[str, int | None]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return (host, int(port)) if port.isdigit() else (address, None)


def _request_id(f: Finished) -> str | None:
    if f.request_id:
        return f.request_id.decode("latin-1")
    try:
        headers = Decoder().decode(f.block, raw=True)  # statelessly encoded (request.py)
    except Exception:
        return None
    for name, value in headers:
        if name == b"x-request-id":
            return str(value.decode("latin-1"))
    return None


def _context(trace_id: bytes, span_id: bytes, sampled: bool) -> SpanContext:
    return SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )


def build(f: Finished, resource: Resource, site: str, wall_offset: float) -> list[ReadableSpan]:
    """The call's span and its attempts' spans. `wall_offset` turns the monotonic times
    the call kept into Unix time (time.time() - time.monotonic(), taken once)."""

    def ns(mono: float) -> int:
        return int((mono + wall_offset) * 1e9)

    trace = f.trace
    if not trace.span_id:
        trace.span_id = new_span_id()  # made now: nothing on the wire carried it
    sampled = trace.sampled
    service, method = _split_method(f.method)
    name = f"{service}/{method}"
    base: dict[str, Any] = {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": method,
        "sidecar.direction": f.direction,
        "sidecar.site": site,
    }
    call_context = _context(trace.trace_id, trace.span_id, sampled)
    parent = None
    if trace.parent_id is not None:
        parent = SpanContext(
            int(trace.trace_id, 16),
            int(trace.parent_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        )
    spans: list[ReadableSpan] = []
    events: list[Event] = []
    previous: Any = None
    for attempt in f.attempts:
        span_id = attempt.span_id or new_span_id()
        host, port = _hostport(attempt.address)
        attrs: dict[str, Any] = dict(base)
        attrs["server.address"] = host
        attrs["network.peer.address"] = host
        if port is not None:
            attrs["server.port"] = port
            attrs["network.peer.port"] = port
        attrs["sidecar.attempt"] = attempt.number
        attrs["sidecar.endpoint.site"] = attempt.host.endpoint.site
        if f.upstream is not None:
            attrs["sidecar.upstream"] = f.upstream
        failure = attempt.failure
        last = attempt is f.attempts[-1]
        if failure is not None:
            status_name = failure.status
            reason = failure.reason
        elif last:
            status_name, reason = f.code, f.reason
        else:
            status_name, reason = "CANCELLED", None
        attempt_events: list[Event] = []
        end = attempt.finished or f.ended
        if reason is not None:
            attrs["sidecar.error"] = reason
            attempt_events.append(
                Event("sidecar.error", {"x-sidecar-error": reason}, timestamp=ns(end))
            )
        attrs["rpc.grpc.status_code"] = STATUS_CODES.get(status_name, 2)
        if previous is not None:
            prev_failure = previous.failure
            why = "-"
            if prev_failure is not None:
                why = prev_failure.reason or prev_failure.status
            events.append(
                Event(
                    "retry",
                    {"sidecar.attempt": attempt.number, "sidecar.previous_error": why},
                    timestamp=ns(attempt.started),
                )
            )
        previous = attempt
        spans.append(
            ReadableSpan(
                name=name,
                context=_context(trace.trace_id, span_id, sampled),
                parent=call_context,
                resource=resource,
                attributes=attrs,
                events=attempt_events,
                kind=SpanKind.CLIENT,
                status=Status(StatusCode.ERROR if status_name != "OK" else StatusCode.UNSET),
                start_time=ns(attempt.started),
                end_time=ns(end),
                instrumentation_scope=SCOPE,
            )
        )
    attrs = dict(base)
    attrs["rpc.grpc.status_code"] = STATUS_CODES.get(f.code, 2)
    attrs["sidecar.attempts"] = len(f.attempts)
    if f.upstream is not None:
        attrs["sidecar.upstream"] = f.upstream
    request_id = _request_id(f)
    if request_id is not None:
        attrs["sidecar.request_id"] = request_id
    inbound = f.direction == "inbound"
    if f.peer:
        host, port = _hostport(f.peer)
        attrs["client.address" if inbound else "network.peer.address"] = host
        if port is not None:
            attrs["client.port" if inbound else "network.peer.port"] = port
    if not inbound and f.upstream is not None:
        attrs["server.address"] = f.upstream  # the logical name the app called
    elif inbound and f.local:
        host, port = _hostport(f.local)  # the listener the call came in on
        attrs["server.address"] = host
        if port is not None:
            attrs["server.port"] = port
    own_error = f.reason is not None and not any(a.failure for a in f.attempts[-1:])
    if f.reason is not None:
        attrs["sidecar.error"] = f.reason
        if own_error:
            events.append(Event("sidecar.error", {"x-sidecar-error": f.reason}, ns(f.ended)))
    is_error = f.code in _SERVER_ERRORS if inbound else f.code != "OK"
    spans.insert(
        0,
        ReadableSpan(
            name=name,
            context=call_context,
            parent=parent,
            resource=resource,
            attributes=attrs,
            events=events,
            kind=SpanKind.SERVER if inbound else SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, f.code) if is_error else Status(StatusCode.UNSET),
            start_time=ns(f.started),
            end_time=ns(f.ended),
            instrumentation_scope=SCOPE,
        ),
    )
    return spans
