"""The access log: one JSON line per logical call, written off the request path.

Does I/O (a file or stdout) on a thread of its own. The relay hands each finished call to
`AccessLog.record` (sidecar/h2relay/plane.py, `Plane.call_done`), which only copies a
few of the call's fields into a bounded buffer: no formatting, no lock, no write on the
event loop. A writer thread drains the buffer every `FLUSH_S`, formats the lines and
writes them. When the buffer is full the call's line is dropped and counted in
`sidecar_access_log_dropped_total`: a slow disk never blocks a call. A listener with no
access log never gets here (the relay checks one attribute).

`fields(call, ...)` and `call_context(call)` are the one place that knows the relay call's
attributes: what the relay's call object is made of can change without the log's format
changing.

Each line's keys (README, "Access log"): start_time, duration_ms, direction, method,
caller, upstream, endpoint, site, attempts, status, sidecar_error, request_id,
trace_id, bytes_in, bytes_out, retried, shed, dropped.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any

from hpack import Decoder
from prometheus_client import CollectorRegistry, Counter

from sidecar.config import AccessLogConfig
from sidecar.tracing.context import parse as parse_traceparent

log = logging.getLogger(__name__)

FLUSH_S = 0.2  # how often the writer drains the buffer


class AccessLogMetrics:
    """On the registry given (sidecar/metrics.py's `Metrics`); None registers nowhere."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.dropped = Counter(
            "sidecar_access_log_dropped_total",
            "Access log lines dropped because the buffer was full (the writer fell behind)",
            registry=registry,
        )
        self.written = Counter(
            "sidecar_access_log_lines_total", "Access log lines written", registry=registry
        )


# the sidecar's own refusals for load, and for too little time left
_SHED = frozenset({"overloaded", "throttled"})
_DROPPED = frozenset({"deadline"})


def fields(call: Any, mono_now: float) -> tuple[Any, ...]:
    """What a line needs from a finished relay call, copied now (cheap, on the loop)."""
    req = call.req
    route = req.route
    attempt = call.attempt  # the last attempt (or None: the sidecar answered itself)
    down = call.down
    sid = call.sid
    counted_in = getattr(down, "bytes_in", None)
    counted_out = getattr(down.conn, "sent", None)
    return (
        mono_now - call.started,
        call.plane.direction,
        req.method,
        getattr(down, "peer", ""),
        route.name if route is not None else "-",
        attempt.address if attempt is not None else "",
        attempt.host.endpoint.site if attempt is not None else "",
        call.attempts,
        call.code,
        call.local_reason,
        call.request_id,
        req.block,  # the caller's x-request-id, decoded by the writer
        _trace_source(call),
        counted_in.pop(sid, 0) if counted_in is not None else 0,
        counted_out.pop(sid, 0) if counted_out is not None else 0,
    )


def call_context(call: Any) -> dict[str, Any]:
    """A relay call's ids for a log line about it (sidecar/logs.py prints them)."""
    req = call.req
    request_id = _request_id(req.block)
    own = call.request_id
    return {
        "request_id": own.decode("latin-1") if own else request_id,
        "trace_id": _trace_id(_trace_source(call)),
        "method": req.method,
        "direction": call.plane.direction,
        "upstream": req.route.name if req.route is not None else None,
        "endpoint": call.attempt.address if call.attempt is not None else None,
    }


def forget(call: Any) -> None:
    """Let go of what the caller's connection counted for a call that is not logged."""
    down = call.down
    getattr(down, "bytes_in", {}).pop(call.sid, None)
    getattr(down.conn, "sent", {}).pop(call.sid, None)


def line(wall_start: float, f: tuple[Any, ...]) -> str:
    """One JSON line from what `fields` copied (on the writer thread)."""
    (duration, direction, method, caller, upstream, endpoint, site, attempts, status,
     reason, own_id, block, trace, bytes_in, bytes_out) = f  # fmt: skip
    request_id = _request_id(block)
    return json.dumps(
        {
            "start_time": datetime.fromtimestamp(wall_start, UTC).isoformat(
                timespec="microseconds"
            ),
            "duration_ms": round(duration * 1000.0, 3),
            "direction": direction,
            "method": method,
            "caller": caller,
            "upstream": upstream,
            "endpoint": endpoint,
            "site": site,
            "attempts": attempts,
            "status": status,
            "sidecar_error": reason,
            "request_id": own_id.decode("latin-1") if own_id else request_id,
            "trace_id": _trace_id(trace),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "retried": attempts > 1,
            "shed": reason in _SHED,
            "dropped": reason in _DROPPED,
        },
        separators=(",", ":"),
    )


def _request_id(block: bytes) -> str | None:
    """x-request-id of a request block (encoded statelessly: static table indices and
    literals, so a fresh decoder reads it)."""
    try:
        headers = Decoder().decode(block, raw=True)
    except Exception:
        return None
    for name, value in headers:
        if name == b"x-request-id":
            return str(value.decode("latin-1"))
    return None


def _trace_source(call: Any) -> bytes | None:
    """The call's trace id (tracing on: its own trace, continued or started), else the
    caller's traceparent as it came (request.py keeps it apart from the block)."""
    trace = call.trace
    if trace is not None:
        return bytes(trace.trace_id)
    found: bytes | None = call.req.traceparent
    return found


def _trace_id(source: bytes | None) -> str | None:
    """The trace id: 32 hex digits as they are, or a W3C traceparent's, if well formed."""
    if source is None:
        return None
    if len(source) == 32:
        return source.decode("latin-1")
    parsed = parse_traceparent(source)
    return None if parsed is None else parsed[0].decode("latin-1")


class AccessLog:
    """A bounded buffer of finished calls and the thread that writes them out."""

    def __init__(self, config: AccessLogConfig, metrics: AccessLogMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or AccessLogMetrics()
        self.ratio = config.sample_ratio
        self.capacity = config.buffer_lines
        self.buffer: deque[tuple[float, tuple[Any, ...]]] = deque()
        self._random = random.Random()
        self._out: IO[str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, call: Any) -> None:
        """A call ended (the loop's thread): keep its fields for the writer, or count a drop."""
        if self.ratio < 1.0 and self._random.random() >= self.ratio:
            forget(call)
            return
        buffer = self.buffer
        if len(buffer) >= self.capacity:
            self.metrics.dropped.inc()
            forget(call)
            return
        f = fields(call, time.monotonic())
        buffer.append((time.time() - f[0], f))  # deque.append: safe beside the writer

    def start(self) -> None:
        path = self.config.path
        self._out = sys.stdout if path == "stdout" else open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self.drain()
        self.drain()

    def drain(self) -> int:
        """Write what the buffer holds; the count written."""
        buffer = self.buffer
        lines: list[str] = []
        while buffer:
            wall, f = buffer.popleft()
            try:
                lines.append(line(wall, f))
            except Exception:
                log.exception("access log: a line could not be formatted")
        out = self._out
        if lines and out is not None:
            try:
                out.write("\n".join(lines) + "\n")
                out.flush()
            except OSError as exc:
                self.metrics.dropped.inc(len(lines))
                log.warning("access log: write to %s failed: %s", self.config.path, exc)
                return 0
            self.metrics.written.inc(len(lines))
        return len(lines)

    def close(self) -> None:
        """Write what is left and stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        out = self._out
        self._out = None
        if out is not None and out is not sys.stdout:
            out.close()
