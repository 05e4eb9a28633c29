"""Free ports come from below the ephemeral range and are never handed out twice."""

import socket

from services.ports import _ephemeral_start, free_port, free_ports


def test_ports_are_distinct_bindable_and_not_ephemeral() -> None:
    """Ports a client connection could take are never handed to a listener-to-be."""
    gen = free_ports()
    ports = [next(gen) for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < _ephemeral_start() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_udp_and_tcp_both_free() -> None:
    """A DNS server's port is free for both protocols."""
    port = free_port(udp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", port))
        t.bind(("127.0.0.1", port))
