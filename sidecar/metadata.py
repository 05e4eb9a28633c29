"""Metadata as a gRPC library shows it to its caller: which keys are end to end.

Pure (no I/O). The in-process client's calls (sidecar/h2relay/grpc_client.py) hand
their response headers and trailers to the app as grpcio would: pseudo-headers, the
HTTP/1.1 connection headers and gRPC's transport headers dropped; everything else,
`-bin` values and `grpc-status-details-bin` included, passed on untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
