"""What discovery hands to the rest of the sidecar: one endpoint of an upstream.

Pure data, no I/O. An endpoint keeps every RFC 2782 field of the SRV record it
came from (priority, weight, port, target) plus the site it was found in, so
balancers and tiers can honour them and `/clusters` can show them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of an upstream. `host` is an IP literal once resolved."""

    host: str
    port: int
    site: str = ""
    priority: int = 0
    weight: int = 1
    target: str = ""

    @property
    def key(self) -> tuple[str, int]:
        """Identity across discovery updates: the same address is the same endpoint."""
        return (self.host, self.port)

    @property
    def address(self) -> str:
        """`host:port`, with IPv6 literals bracketed, as gRPC targets want."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_hostport(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port`; raise ValueError with the reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r}: unclosed '[' in IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"{text!r}: IPv6 addresses need brackets, e.g. [::1]:8080")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{text!r}: missing host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r}: missing port (expected host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
    return host, int(port_text)
