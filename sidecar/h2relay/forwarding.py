"""Steps 6 and 7 in frames: a call's request toward the upstream, its answer back.

Methods of `Call` (sidecar/h2relay/call.py), written as functions of the call; each is
called through a one-line method of the same name in `Call`'s body.
Does I/O only by queueing frames on the two sans-IO connections (relay.py writes them
out). Up: the headers (with the remaining time as `grpc-timeout` and an `x-request-id`
when none came) and the request DATA, a copy held for a replay up to `retry_buffer`
bytes. Down: headers, DATA and trailers as they come, the caller's window credited only
once its bytes went on (so a caller cannot outrun the upstream, nor the reverse), and
the message-size limit enforced both ways as DATA streams past. Resets cross over.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sidecar.h2relay import frames as F
from sidecar.h2relay.grpcwire import STATUS_BY_WIRE, STATUS_FOR_RST, MessageLimit, encode_timeout
from sidecar.h2relay.hpack_codec import Block, encode_literal
from sidecar.h2relay.request import PreparedResponse, prepare_response
from sidecar.outcome import Outcome, caller_gone, classify

if TYPE_CHECKING:
    from sidecar.h2relay.call import Call
    from sidecar.h2relay.relay import Upstream

_monotonic = time.monotonic
_TIMEOUT_NAME = b"grpc-timeout"
_REQUEST_ID = b"x-request-id"


def _response(block: Block) -> PreparedResponse:
    found = block.prepared
    if found is None:
        found = block.prepared = prepare_response(block.headers, STATUS_BY_WIRE)
    return found  # type: ignore[return-value]


def open_upstream(self: Call, up: Upstream) -> None:
    """Open our stream on `up` and send the headers and any request bytes held."""
    if self.pending is not None:
        self._leave_pending()
    self.up = up
    conn = up.conn
    sid = self.up_sid = conn.open_stream()
    up.calls[sid] = self
    block = self.req.block
    ends = self.try_ends or self.deadline
    if ends is not None:
        remaining = ends - _monotonic()
        block += encode_literal(_TIMEOUT_NAME, encode_timeout(max(remaining, 0.001)))
    if self.request_id:
        block += encode_literal(_REQUEST_ID, self.request_id)
    conn.send_headers(sid, block, self.req_ended and not self.held)
    held = self.held
    if held:
        last = len(held) - 1
        for i, chunk in enumerate(held):
            flow = self.held_flow if i == last else 0
            self._send_up(chunk, self.req_ended and i == last, flow)
        if not self.replayable:
            self.held = []
    elif self.held_flow:
        self.down.conn.consumed(self.sid, self.held_flow)
    self.held_flow = 0
    if self.req_ended and not self.up_pending:
        up.write_now()  # a whole request: on its way now, not after the rest of the read
    else:
        up.kick()


def _send_up(self: Call, data: bytes, end_stream: bool, flow: int) -> None:
    up = self.up
    assert up is not None
    if self.up_pending:
        self.up_pending.append([data, end_stream, flow])
        return
    sent = up.conn.send_data(self.up_sid, data, end_stream)
    if sent < len(data):
        self.up_pending.append([data[sent:], end_stream, flow])
        up.blocked.add(self)
    elif flow:
        self.down.conn.consumed(self.sid, flow)


def flush_up(self: Call) -> None:
    """The upstream stream's window grew: send what waits."""
    up = self.up
    if up is None:
        return
    pending = self.up_pending
    while pending:
        data, end_stream, flow = pending[0]
        sent = up.conn.send_data(self.up_sid, data, end_stream)
        if sent < len(data):
            pending[0][0] = data[sent:]
            return
        pending.pop(0)
        if flow:
            self.down.conn.consumed(self.sid, flow)
    up.blocked.discard(self)
    self.down.kick()


def on_data(self: Call, data: bytes, end_stream: bool, flow: int) -> None:
    if self.done:
        self.down.conn.consumed(self.sid, flow)
        return
    if end_stream:
        self.req_ended = True
    if data and not self.req_limit.feed(data):
        self.down.conn.consumed(self.sid, flow)
        self.fail(
            "RESOURCE_EXHAUSTED",
            f"request message over max_message_bytes ({self.plane.max_message_bytes})",
            "message_too_large",
        )
        return
    up = self.up
    if up is not None and self.up_sid:
        if self.replayable:  # keep a copy for a replay, up to the retry buffer
            if self.held_bytes + len(data) <= self.plane.retry_buffer:
                self.held.append(data)
                self.held_bytes += len(data)
            else:
                self.replayable = False
                self.held = []
        self._send_up(data, end_stream, flow)
        if end_stream and not self.up_pending:
            up.write_now()  # the request is whole: send it before reading on
        else:
            up.kick()
        return
    # no upstream stream yet (admission, connecting, between attempts): hold it, and
    # credit the window only once it is sent, so a caller cannot outrun us
    self.held.append(data)
    self.held_bytes += len(data)
    self.held_flow += flow
    if self.held_bytes > self.plane.retry_buffer:
        self.replayable = False
    if end_stream and self.req.route is None and self.waiter is not None:
        self._answer_locally()


def on_reset(self: Call, code: int) -> None:
    """The caller reset its stream: cancel upstream; at the deadline that is a timeout."""
    self.done = True
    self.code = "CANCELLED"
    self._cancel_upstream(caller_gone(self.started, self.deadline, _monotonic()))
    self._finish_call()


def on_up_headers(self: Call, block: Block, end_stream: bool) -> None:
    resp = _response(block)
    if end_stream:
        if resp.status == "DEADLINE_EXCEEDED" and resp.peer_error is None and self._expired():
            # the peer gave up on the budget we sent it, as our own timer was due: our
            # timeout (the grpcio pipeline's local_reason rule), not the app's answer
            self.upstream_ended = True
            if self.try_ends is not None:
                self._per_try_timeout()
            else:
                self.on_deadline()
            return
        self.upstream_ended = True
        outcome = self._upstream_done(resp)
        if outcome is None:
            return  # a trailers-only error being retried on another endpoint
        if not self.done:
            self.responded = True
            self.code = resp.status or "UNKNOWN"
            self._to_down(resp.block, True, 0, True)  # out to the caller first...
        up = self.up
        if up is not None:
            # ...its bookkeeping once this read is done (Pool.settle): the other answers
            # in the read go out before it, not after every earlier answer's bookkeeping
            up.pool.answered.append((self, outcome))
            return
        settle(self, outcome)
        return
    if self.done:
        return
    self.responded = True
    self.held = []
    self.replayable = False
    self.resp_limit = MessageLimit(self.plane.max_message_bytes)
    self._to_down(resp.block, False, 0, True)


def on_up_data(self: Call, data: bytes, end_stream: bool, flow: int) -> None:
    up = self.up
    if self.done or up is None:
        if up is not None:
            up.conn.consumed(self.up_sid, flow)
        return
    limit = self.resp_limit
    if data and limit is not None and not limit.feed(data):
        up.conn.consumed(self.up_sid, flow)
        self._end_attempt(Outcome.SUCCESS)
        self.fail(
            "RESOURCE_EXHAUSTED",
            f"response message over max_message_bytes ({self.plane.max_message_bytes})",
            "message_too_large",
        )
        return
    self._to_down(data, end_stream, flow, False)


def on_up_reset(self: Call, code: int) -> None:
    """The upstream reset our stream."""
    if code == F.CANCEL and not self.done and self._expired():
        # grpc-go's server ends a call whose budget (the grpc-timeout we sent) ran out
        # with RST_STREAM(CANCEL) and no status, and that can beat our own timer, which
        # fires up to a tick late (timers.py): it is our timeout, as an expired peer's
        # DEADLINE_EXCEEDED is in on_up_headers. Relayed as it came, the caller would
        # see CANCELLED, and breaker and EWMA a cancel instead of a timeout.
        self.upstream_ended = True
        if self.try_ends is not None:
            self._per_try_timeout()
        else:
            self.on_deadline()
        return
    status = STATUS_FOR_RST.get(code, "INTERNAL")
    if code == F.REFUSED_STREAM and not self.responded:
        self._attempt_failed("connection_lost", Outcome.UNAVAILABLE, "refused the stream")
        return
    self._detach_upstream(reset=False)
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


def on_up_lost(self: Call, why: str, connect: bool) -> None:
    """The pooled connection failed (or never connected) under this call."""
    if self.done:
        self._end_attempt(Outcome.CANCELLED)
        return
    reason = "connect_failed" if connect else "connection_lost"
    outcome = Outcome.CONNECT_FAILED if connect else Outcome.UNAVAILABLE
    self._attempt_failed(reason, outcome, why)
    self.down.kick()


def on_up_refused(self: Call) -> None:
    """GOAWAY said the peer never processed our stream: always safe to replay."""
    self._attempt_failed("connection_lost", Outcome.UNAVAILABLE, "peer went away")
    self.down.kick()


def _to_down(self: Call, data: bytes, end_stream: bool, flow: int, is_headers: bool) -> None:
    down = self.down
    if self.down_pending:
        self.down_pending.append([data, end_stream, flow, is_headers])
        return
    if is_headers:
        down.conn.send_headers(self.sid, data, end_stream)
    else:
        sent = down.conn.send_data(self.sid, data, end_stream)
        if sent < len(data):
            self.down_pending.append([data[sent:], end_stream, flow, False])
            down.blocked.add(self)
            down.kick()
            return
        if flow and self.up is not None:
            self.up.conn.consumed(self.up_sid, flow)
    if end_stream:
        down.write_now()  # the answer is whole: to the caller before the next one is read
    else:
        down.kick()


def flush_down(self: Call) -> None:
    down = self.down
    pending = self.down_pending
    while pending:
        data, end_stream, flow, is_headers = pending[0]
        if is_headers:
            down.conn.send_headers(self.sid, data, end_stream)
        else:
            sent = down.conn.send_data(self.sid, data, end_stream)
            if sent < len(data):
                pending[0][0] = data[sent:]
                return
            if flow and self.up is not None:
                self.up.conn.consumed(self.up_sid, flow)
                self.up.kick()
        pending.pop(0)
    down.blocked.discard(self)
    if self.upstream_ended and not self.done:
        self._close_down()


def _close_down(self: Call) -> None:
    """The final frame went (or is queued behind data) to the caller."""
    if self.down_pending:
        return  # flush_down calls back when the trailers are out
    self.done = True
    self._detach_upstream(reset=not (self.req_ended and not self.up_pending))
    self.up = None
    self._finish_call()


def settle(self: Call, outcome: Outcome) -> None:
    """The bookkeeping of a call whose final status came from its upstream: the
    attempt's report (breaker, EWMA, throttling, metrics), then the call's end."""
    self._end_attempt(outcome)
    if not self.done:
        self._close_down()
