"""What the sidecar answers a caller itself: its own statuses and the local methods.

Methods of `Call` (sidecar/h2relay/call.py), written as functions of the call; each is
called through a one-line method of the same name in `Call`'s body.
Does I/O only by queueing frames on the caller's sans-IO connection: a sidecar-made
status (`fail`, `refuse`: trailers-only before any response header, trailers after),
the answer of a local method (Health/Check, or a stream such as Health/Watch through
`local_send` / `local_end`), and who a local failure's message names (`_target`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sidecar.h2relay.grpcwire import status_trailers, trailers_only
from sidecar.h2relay.hpack_codec import encode_field
from sidecar.outcome import Outcome
from sidecar.policy import Refusal

if TYPE_CHECKING:
    from sidecar.h2relay.call import Call

_LOCAL_HEADERS = encode_field(b":status", b"200") + encode_field(
    b"content-type", b"application/grpc"
)


def _target(self: Call) -> str:
    if self.plane.direction == "inbound":
        return "the local app"
    return f"upstream {self.req.route.name}"


def refuse(self: Call, refusal: Refusal) -> None:
    extra: tuple[tuple[str, str], ...] = ()
    if refusal.pushback_ms is not None:
        extra = (("grpc-retry-pushback-ms", str(refusal.pushback_ms)),)
    self.fail(refusal.status, refusal.message, refusal.reason, extra)


def fail(
    self: Call,
    status: str,
    message: str,
    reason: str | None,
    extra: tuple[Any, ...] = (),
    block: bytes | None = None,
) -> None:
    """End the call toward the caller with a sidecar-made status (or, `block`, an
    upstream's trailers-only answer kept from an earlier attempt)."""
    if self.done:
        return
    self._cancel_upstream(Outcome.CANCELLED)
    self.down_pending = []
    self.down.blocked.discard(self)
    if block is not None:
        pass
    elif self.responded:
        block = status_trailers(status, message, reason)
    else:
        block = trailers_only(status, message, reason, extra)
    self.responded = True
    self.down.conn.send_headers(self.sid, block, True)
    self.code = status
    self.local_reason = reason
    self.done = True
    self._finish_call()
    self.down.kick()


def _answer_locally(self: Call) -> None:
    handler = self.waiter
    self.waiter = None
    body = b"".join(self.held)
    self.down.conn.consumed(self.sid, self.held_flow)
    self.held_flow = 0
    request = body[5:] if len(body) >= 5 else b""
    if getattr(handler, "streaming", False):
        # a server stream answered by the sidecar (Health/Watch): the handler sends
        # through local_send / local_end and may keep `waiter` to be told of a cancel
        self.waiter = handler.open(self, request)
        return
    status, message, reply = handler(request)
    if status != "OK" or reply is None:
        self.fail(status, message, None)
        return
    conn = self.down.conn
    conn.send_headers(self.sid, _LOCAL_HEADERS, False)
    conn.send_data(self.sid, b"\0" + len(reply).to_bytes(4, "big") + reply, False)
    conn.send_headers(self.sid, encode_field(b"grpc-status", b"0"), True)
    self.responded = self.done = True
    self.code = "OK"
    self._finish_call()


def local_send(self: Call, message: bytes) -> None:
    """One message of a stream the sidecar answers itself (headers go first)."""
    if self.done:
        return
    if not self.responded:
        self.responded = True
        self._to_down(_LOCAL_HEADERS, False, 0, True)
    self._to_down(b"\0" + len(message).to_bytes(4, "big") + message, False, 0, False)


def local_end(self: Call, status: str, message: str) -> None:
    """End a stream the sidecar answers itself."""
    if self.done:
        return
    self.waiter = None
    if not self.responded:
        self.fail(status, message, None)
        return
    self.code = status
    self.upstream_ended = True
    self._to_down(status_trailers(status, message, None), True, 0, True)
    self._close_down()
    self.down.kick()
