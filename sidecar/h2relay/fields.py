"""Whether a caller's header block is a well-formed HTTP/2 request (RFC 9113 §8.1-§8.3).

Pure (no I/O). A malformed request or trailer block is a stream error of type
PROTOCOL_ERROR (RFC 9113 §8.1.1): sidecar/h2relay/connection.py resets the stream
before any call starts. The check runs once per distinct block (the verdict is kept on
the decoded, cached block: hpack_codec.Block.prepared holds the relay's own reading of
it, `checked` this one), so a client repeating its request headers pays a dict hit.

What makes a block malformed (each names the RFC rule in its message):
- a field name with uppercase letters, or a byte outside the token characters
  (§8.2: lowercase only; §8.2.1: no control characters, space, or colon past the
  first byte); a value with NUL, CR or LF, or starting or ending with whitespace
  (§8.2.1);
- a connection-specific field (`connection`, `keep-alive`, `proxy-connection`,
  `transfer-encoding`, `upgrade`), or `te` with a value other than `trailers` (§8.2.2);
- pseudo-header fields (§8.3): unknown ones or response ones (`:status`), one after a
  regular field, a duplicate, a missing `:method`, `:scheme` or `:path` (CONNECT aside:
  §8.5), an empty `:path`; any pseudo-header in trailers (§8.1);
- a `content-length` that is not a decimal number (§8.1.1; the DATA bytes are held to
  it by the connection).
"""

from __future__ import annotations

from sidecar.h2relay.hpack_codec import Headers

_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
# bytes a field name may hold (RFC 9110 §5.6.2 tchar, lowercase; RFC 9113 §8.2.1)
_NAME_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_BAD_VALUE_BYTES = (b"\0", b"\r", b"\n")
_WHITESPACE = (32, 9)


def _field_error(name: bytes, value: bytes) -> str | None:
    """The rule a regular field breaks, or None."""
    if not name:
        return "an empty field name (RFC 9113 §8.2.1)"
    if not _NAME_BYTES.issuperset(name):
        if name.lower() != name:
            return f"uppercase in field name {name!r} (RFC 9113 §8.2)"
        return f"a forbidden byte in field name {name!r} (RFC 9113 §8.2.1)"
    if value:
        if value[0] in _WHITESPACE or value[-1] in _WHITESPACE:
            return f"field {name!r} starts or ends with whitespace (RFC 9113 §8.2.1)"
        for bad in _BAD_VALUE_BYTES:
            if bad in value:
                return f"NUL, CR or LF in field {name!r} (RFC 9113 §8.2.1)"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r} (RFC 9113 §8.2.2)"
    if name == b"te" and value != b"trailers":
        return "te other than trailers (RFC 9113 §8.2.2)"
    if name == b"content-length" and not value.isdigit():
        return "content-length not a number (RFC 9113 §8.1.1)"
    return None


def request_error(headers: Headers) -> str | None:
    """Why a request's header block is malformed, or None if it is well formed."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name!r} after a regular field (RFC 9113 §8.3)"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name!r} not of a request (RFC 9113 §8.3)"
            if name in seen:
                return f"pseudo-header {name!r} twice (RFC 9113 §8.3.1)"
            seen.add(name)
            if name == b":path" and not value:
                return "an empty :path (RFC 9113 §8.3.1)"
            continue
        regular = True
        error = _field_error(name, value)
        if error is not None:
            return error
    connect = (b":method", b"CONNECT") in headers
    for required in (b":method",) if connect else (b":method", b":scheme", b":path"):
        if required not in seen:
            return f"no {required.decode()} (RFC 9113 §8.3.1)"
    return None


def trailers_error(headers: Headers) -> str | None:
    """Why a trailer block is malformed, or None."""
    for name, value in headers:
        if name[:1] == b":":
            return f"pseudo-header {name!r} in trailers (RFC 9113 §8.1)"
        error = _field_error(name, value)
        if error is not None:
            return error
    return None


def content_length(headers: Headers) -> int:
    """The request's content-length (checked to be digits), or -1 when it has none."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return -1
