"""What the relay derives from a request's header block, once per distinct block.

Pure (no I/O). The result is cached on the decoded block (hpack_codec.Block.prepared),
so a client repeating the same request headers pays for this once: routing by the
`:path` service and the config's `routes` (a rule that reads headers answers a
`HeaderRoutes`, asked here with the block's headers: sidecar/route_rules.py), the
caller's `grpc-timeout`, the hop-by-hop filter, and the encoded
block toward the upstream minus the two fields that change per call (`grpc-timeout`,
re-derived from the remaining deadline, and a fresh `x-request-id` when none came).
The route in a cached result is only as current as the routes it was resolved from:
each result carries the plane's routing `generation`, and a config reload that
changes the routes bumps it (h2relay Plane.routes_changed), so a block cached before
is resolved again at its next use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.h2relay.grpcwire import parse_timeout
from sidecar.h2relay.hpack_codec import Headers, encode_field, encode_literal
from sidecar.route_rules import HeaderRoutes

# Connection-specific fields (RFC 9113 §8.2.2), this hop's own timer, and the caller's
# identity (the sidecar's to set).
_DROP_REQUEST = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"grpc-timeout",
        # the sidecar's own: set inbound from the caller's certificate (call.py), never
        # taken from a caller, so that an app can trust it
        b"x-sidecar-caller",
    }
)
_DROP_RESPONSE = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
REQUEST_ID = b"x-request-id"
# kept apart from the block: the call passes it on as it came, or (tracing on) with this
# hop's span as the parent (sidecar/tracing/context.py)
TRACEPARENT = b"traceparent"


@dataclass(slots=True)
class Prepared:
    """A request block, read. `error` set: refuse the call (no route, not gRPC...)."""

    method: str
    route: Any  # sidecar.route.Route | None
    timeout_s: float | None
    block: bytes  # encoded toward the upstream, without grpc-timeout / a new request id
    has_request_id: bool
    hash_value: bytes | None
    priority: str | None = None  # x-sidecar-priority (inbound admission)
    error: str | None = None  # "bad_request" | "not_grpc"
    split_key: bytes | None = None  # a weighted split's `hash_on` header value
    rules: Any = None  # route_rules.HeaderRoutes when header rules chose the route
    generation: int = 0  # the plane's routing generation `route` was resolved in
    traceparent: bytes | None = None  # the caller's W3C traceparent, as it came


def prepare(
    headers: Headers, resolve: Callable[[str, str | None], Any], generation: int = 0
) -> Prepared:
    method = b""
    verb = b""
    content_type = b""
    timeout: bytes | None = None
    authority: str | None = None
    has_id = False
    priority: str | None = None
    traceparent: bytes | None = None
    pseudo: list[bytes] = []
    regular: list[bytes] = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":path":
                method = value
            elif name == b":authority":
                authority = value.decode("latin-1")
            elif name == b":method":
                verb = value
            pseudo.append(encode_field(name, value))
            continue
        if name == b"grpc-timeout":
            timeout = value
        elif name == b"content-type":
            content_type = value
        elif name == b"te" and value != b"trailers":
            continue
        elif name == REQUEST_ID:
            has_id = True
        elif name == b"x-sidecar-priority":
            priority = value.decode("latin-1")
        elif name == TRACEPARENT:
            traceparent = value
            continue
        if name not in _DROP_REQUEST:
            regular.append(encode_field(name, value))
    path = method.decode("latin-1")
    route = resolve(path, authority) if method else None
    rules = None
    if isinstance(route, HeaderRoutes):  # rules on this method read headers
        rules = route
        route = rules.select(headers)
    hash_value = None
    split_key = None
    if route is not None:
        if route.hash_key:
            key = route.hash_key.encode()
            hash_value = next((v for n, v in headers if n == key), None)
        split = route.split
        if split is not None and split.hash_on is not None:
            key = split.hash_on.encode()
            split_key = next((v for n, v in headers if n == key), None)
    prepared = Prepared(
        method=path,
        route=route,
        timeout_s=None if timeout is None else parse_timeout(timeout),
        block=b"".join(pseudo + regular),
        has_request_id=has_id,
        hash_value=hash_value,
        priority=priority,
        split_key=split_key,
        rules=rules,
        generation=generation,
        traceparent=traceparent,
    )
    if not method or verb != b"POST":
        prepared.error = "bad_request"
    elif not content_type.startswith(b"application/grpc"):
        prepared.error = "not_grpc"
    return prepared


def prepare_split(
    base: Prepared, extra: Headers, resolve: Callable[[str, str | None], Any]
) -> Prepared | None:
    """A request block split by the decoder (hpack_codec.Decoder._split): the cached head's
    Prepared with this call's `grpc-timeout` and `x-request-id` applied, or None when the
    tail holds anything else (then the whole block is prepared as usual)."""
    timeout = base.timeout_s
    block = base.block
    has_id = base.has_request_id
    route = base.route
    rules = base.rules
    split_key = base.split_key
    split = None if route is None else route.split
    traceparent = base.traceparent
    for name, value in extra:
        if rules is not None and name in rules.reads:
            return None  # a header rule reads this call's own value: choose afresh
        if name == b"grpc-timeout":
            timeout = parse_timeout(value)
        elif name == REQUEST_ID and not has_id:
            has_id = True
            block += encode_literal(name, value)
            if split is not None and split.hash_on == "x-request-id":
                split_key = value  # sticky per request id: this call's own
        elif name == TRACEPARENT and traceparent is None:
            traceparent = value
        else:
            return None
    if route is not None and route.hash_key in ("grpc-timeout", "x-request-id", "traceparent"):
        return None
    if split is not None and split.hash_on in ("grpc-timeout", "traceparent"):
        return None
    return Prepared(base.method, route, timeout, block, has_id, base.hash_value,
                    base.priority, base.error, split_key, rules, base.generation,
                    traceparent)  # fmt: skip


@dataclass(slots=True)
class PreparedResponse:
    """A response header block or trailer block from an upstream, read."""

    block: bytes  # re-encoded toward the caller
    status: str | None  # grpc-status name, when present
    peer_error: str | None  # the peer sidecar's x-sidecar-error, when present
    pushback_ms: bytes | None  # grpc-retry-pushback-ms as received (the retry policy reads it)


def prepare_response(headers: Headers, status_names: dict[bytes, str]) -> PreparedResponse:
    out: list[bytes] = []
    status = None
    peer_error = None
    pushback = None
    for name, value in headers:
        if name in _DROP_RESPONSE:
            continue
        if name == b"grpc-status":
            status = status_names.get(value, "UNKNOWN")
        elif name == b"x-sidecar-error":
            peer_error = value.decode("latin-1")
        elif name == b"grpc-retry-pushback-ms":
            pushback = value
        out.append(encode_field(name, value))
    return PreparedResponse(b"".join(out), status, peer_error, pushback)
