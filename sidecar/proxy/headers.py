"""Metadata rules of a hop: what passes, what is added, what a sidecar-made error carries.

Pure (no I/O). grpcio hands metadata over as (key, value) pairs with pseudo-headers
and most transport headers already stripped; what is left that belongs to this hop
only is dropped here, so a hop never forwards another hop's framing or timers.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterable
from typing import Any

from sidecar.outcome import SIDECAR_ERROR_KEY

REQUEST_ID_KEY = "x-request-id"

# Hop-by-hop: HTTP/1.1 connection headers (RFC 9110 §7.6.1), HTTP/2 pseudo-headers, and the
# gRPC transport headers (grpc-timeout is re-derived from the remaining deadline on each hop;
# encodings are negotiated per connection). user-agent is set by each hop's own gRPC library.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "host",
        "content-type",
        "content-length",
        "user-agent",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-message-type",
        "grpc-status",
        "grpc-message",
        "grpc-previous-rpc-attempts",
    }
)

Pairs = tuple[tuple[str, Any], ...]

# Request ids: a random per-process prefix and a counter (32 hex digits, like a UUID's
# hex), unique without a uuid4 (an os.urandom call) per call. A forked child draws a
# prefix of its own.
# (next() on itertools.count is atomic under the GIL: safe from any thread.)
_id_prefix = ""
_id_counter = itertools.count()


def _reset_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix = uuid.uuid4().hex[:16]
    _id_counter = itertools.count()


_reset_ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_ids)


def forwardable(metadata: Iterable[tuple[str, Any]] | None) -> Pairs:
    """The end-to-end part of `metadata` (request headers, response headers or trailers).

    `grpc-status-details-bin` and `traceparent` are end-to-end and pass untouched."""
    if not metadata:
        return ()
    return tuple(
        (key, value)
        for key, value in metadata
        if not key.startswith(":") and key not in _HOP_BY_HOP
    )


def with_request_id(metadata: Pairs) -> tuple[Pairs, str]:
    """Ensure an `x-request-id` (a fresh unique id when the caller sent none); return it too."""
    for key, value in metadata:
        if key == REQUEST_ID_KEY:
            return metadata, str(value)
    request_id = f"{_id_prefix}{next(_id_counter):016x}"
    return (*metadata, (REQUEST_ID_KEY, request_id)), request_id


def value_of(metadata: Iterable[tuple[str, Any]] | None, key: str) -> Any | None:
    """The first value of `key`, or None."""
    for k, v in metadata or ():
        if k == key:
            return v
    return None


def sidecar_error(reason: str) -> Pairs:
    """Trailing metadata that marks an error as made by this sidecar, not by the app."""
    return ((SIDECAR_ERROR_KEY, reason),)


def local_reason(
    code_name: str, details: str, *, got_headers: bool, deadline_passed: bool
) -> str | None:
    """Name an error grpcio's client made locally (never reached or lost the peer), else None.

    grpcio does not mark locally generated statuses, so this reads the core's own wording;
    a peer's answer always arrives after its response headers, a local failure before them.
    """
    text = details.lower()
    if code_name == "UNAVAILABLE" and not got_headers and "failed to connect" in text:
        return "connect_failed"
    if code_name == "UNAVAILABLE" and ("socket closed" in text or "connection reset" in text):
        return "connection_lost"
    if code_name == "DEADLINE_EXCEEDED" and deadline_passed:
        return "timeout"
    if code_name == "RESOURCE_EXHAUSTED" and "message larger than max" in text:
        return "message_too_large"
    return None
