"""Free ports for processes a test, the demo or a benchmark is about to start.

Does I/O (binds and closes sockets). Binding port 0 hands out a port from the
kernel's ephemeral range, the same range every outgoing connection takes its local
port from: on a busy machine some client's connection can grab it between our
close() and the child's bind(), and the child dies with "address already in use".
So ports are drawn at random from below the ephemeral range, which the kernel never
hands to connections, and never twice from one process.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

_LOW = 10_000
_handed_out: set[tuple[str, int]] = set()
_rng = random.Random()


def _ephemeral_start() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768
    return low if low > _LOW + 1_000 else 32_768


def _bindable(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in kinds:
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """A port nothing is bound to on `host` now (TCP, and UDP too when `udp`)."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    high = _ephemeral_start()
    for _ in range(200):
        port = _rng.randrange(_LOW, high)
        if (host, port) in _handed_out or not _bindable(host, port, kinds):
            continue
        _handed_out.add((host, port))
        return port
    raise OSError(f"no free port found on {host} below {high}")


def free_ports(host: str = "127.0.0.1") -> Iterator[int]:
    """An endless supply of distinct free ports."""
    while True:
        yield free_port(host)
