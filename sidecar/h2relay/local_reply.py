"""What the sidecar answers a caller itself: its own statuses and the local methods.

Pure (no I/O): the encoded header blocks and messages of a sidecar-made answer; the
call (call.py) queues them on the caller's stream. A sidecar error goes out
trailers-only when no response header was sent yet, else as trailers (gRPC's
PROTOCOL-HTTP2.md, "Responses"), always with `x-sidecar-error: <reason>` so a caller
can tell a sidecar decision from the app's own status. A local method (Health/Check,
Health/Watch, wiring.py) is answered from the sidecar's own state, never forwarded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sidecar.h2relay.grpcwire import status_trailers, trailers_only
from sidecar.h2relay.hpack_codec import encode_field
from sidecar.policy import Refusal

# a local method: request message bytes -> (status name, message, response bytes | None)
LocalMethod = Callable[[bytes], tuple[str, str, bytes | None]]

HEADERS: Final = encode_field(b":status", b"200") + encode_field(
    b"content-type", b"application/grpc"
)
OK_TRAILERS: Final = encode_field(b"grpc-status", b"0")


def framed(message: bytes) -> bytes:
    """One uncompressed gRPC message: flag byte, 4-byte length, the bytes."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def unframed(body: bytes) -> bytes:
    """The first message of a request body (a local method takes exactly one)."""
    return body[5:] if len(body) >= 5 else b""


def status_block(
    status: str,
    message: str,
    reason: str | None,
    responded: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A sidecar-made status: trailers after a response header, else trailers-only."""
    if responded:
        return status_trailers(status, message, reason)
    return trailers_only(status, message, reason, extra)


def refusal_extra(refusal: Refusal) -> tuple[tuple[str, str], ...]:
    """A policy's refusal may ask the caller to wait: `grpc-retry-pushback-ms` (A6)."""
    if refusal.pushback_ms is None:
        return ()
    return (("grpc-retry-pushback-ms", str(refusal.pushback_ms)),)


def target(direction: str, upstream: str) -> str:
    """Whom a local failure's message names."""
    return "the local app" if direction == "inbound" else f"upstream {upstream}"


def no_route(method: str) -> str:
    return (
        f"sidecar has no route for method {method}: no upstream lists its "
        f"service in grpc_services (check the sidecar config)"
    )


def no_endpoints(upstream: str) -> str:
    return (
        f"upstream {upstream} has no endpoint to call (check its endpoints or "
        f"discovery, and /clusters on the admin port)"
    )


def fault(upstream: str) -> str:
    return f"fault injected by the sidecar config for upstream {upstream}"


def deadline_spent(upstream: str) -> str:
    return (
        f"deadline spent before the sidecar could call {upstream} "
        f"(raise the caller's deadline or the upstream's timeout_ms)"
    )


def too_large(which: str, limit: int) -> str:
    return f"{which} message over max_message_bytes ({limit})"


INTERNAL: Final = "the sidecar failed while handling this call (see its log)"
