"""The in-memory transport pair (sidecar/h2relay/memory.py): order, delivery on a later
loop turn (never inside `write`), one chunk per turn, pausing, close after the data,
abort without it; and two relay HTTP/2 connections talking over it."""

from __future__ import annotations

import asyncio
from typing import Any

from sidecar.h2relay.connection import H2Connection
from sidecar.h2relay.memory import LOOPBACK, memory_pair


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.transport: Any = None
        self.writing = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        assert not self.writing, "delivered inside the writer's write()"
        self.events.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", type(exc).__name__ if exc else None))


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_bytes_arrive_in_order_on_a_later_turn_one_chunk_per_turn() -> None:
    a, b = Recorder(), Recorder()
    ta, tb = memory_pair(asyncio.get_running_loop(), a, b)
    assert a.events == b.events == ["made"]
    b.writing = True
    ta.write(b"one ")
    ta.write(b"two")
    assert b.events == ["made"]  # not inside write()
    b.writing = False
    await turns()
    assert b.events == ["made", b"one two"]
    tb.write(b"back")
    await turns()
    assert a.events == ["made", b"back"]
    assert ta.get_extra_info("peername") == LOOPBACK
    assert ta.get_extra_info("socket") is None
    assert not ta.is_closing()


async def test_paused_reading_holds_deliveries() -> None:
    a, b = Recorder(), Recorder()
    ta, tb = memory_pair(asyncio.get_running_loop(), a, b)
    tb.pause_reading()
    ta.write(b"held")
    await turns()
    assert b.events == ["made"]
    tb.resume_reading()
    await turns()
    assert b.events == ["made", b"held"]


async def test_close_delivers_first_then_both_lose_the_connection() -> None:
    a, b = Recorder(), Recorder()
    ta, _ = memory_pair(asyncio.get_running_loop(), a, b)
    ta.write(b"last words")
    ta.close()
    assert ta.is_closing()
    ta.write(b"too late")
    await turns()
    assert b.events == ["made", b"last words", ("lost", None)]
    assert a.events == ["made", ("lost", None)]


async def test_abort_drops_what_was_not_delivered() -> None:
    a, b = Recorder(), Recorder()
    ta, _ = memory_pair(asyncio.get_running_loop(), a, b)
    ta.write(b"dropped")
    ta.abort()
    await turns()
    assert b.events == ["made", ("lost", "ConnectionResetError")]
    assert a.events == ["made", ("lost", "ConnectionResetError")]


class H2End(asyncio.Protocol):
    """A bare sans-IO connection on a transport, writing what it queued once a turn."""

    def __init__(self, client: bool) -> None:
        self.conn = H2Connection(self, client=client)
        self.headers: list[Any] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.flush()

    def flush(self) -> None:
        out = self.conn.take()
        if out:
            self.transport.write(out)

    def data_received(self, data: bytes) -> None:
        self.conn.receive(data)
        self.flush()

    def on_headers(self, sid: int, block: Any, end_stream: bool) -> None:
        self.headers.append((sid, dict(block.headers), end_stream))

    def on_oversized(self, sid: int) -> None: ...
    def on_data(self, sid: int, data: bytes, end_stream: bool, flow: int) -> None: ...
    def on_reset(self, sid: int, code: int) -> None: ...
    def on_window(self, sid: int) -> None: ...
    def on_goaway(self, last: int, code: int) -> None: ...


async def test_two_http2_connections_over_the_pair() -> None:
    """Preface, SETTINGS both ways and a request's HEADERS cross the pair intact."""
    from sidecar.h2relay.hpack_codec import encode

    client, server = H2End(client=True), H2End(client=False)
    memory_pair(asyncio.get_running_loop(), client, server)
    sid = client.conn.open_stream()
    request = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/x.Y/Z")]
    client.conn.send_headers(sid, encode(request), True)
    client.flush()
    await turns(5)
    assert server.headers == [(1, dict(request), True)]
