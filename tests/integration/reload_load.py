"""Load that must not notice a config reload: unary calls and one long bidi stream over
one grpcio channel through a sidecar, every failure kept with its status.

Used by tests/integration/test_reload.py and the reload chaos scenario
(tests/chaos/test_reload.py). Bounded: the unary loop stops at `stop` or after
`max_calls`; the stream after `messages` messages.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc


@dataclass
class Tally:
    ok: int = 0
    failed: list[str] = field(default_factory=list)  # "CODE: details" per failed call
    served_by: Counter[str] = field(default_factory=Counter)


async def unary_load(
    stub: echo_pb2_grpc.EchoStub,
    stop: asyncio.Event,
    tally: Tally,
    *,
    max_calls: int = 100_000,
    max_s: float = 120.0,
    concurrency: int = 4,
) -> None:
    """Unary calls, `concurrency` at a time, until `stop` (bounded by count and time)."""
    end = time.monotonic() + max_s
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while not stop.is_set() and sent < max_calls and time.monotonic() < end:
            sent += 1
            try:
                reply = await stub.Unary(echo_pb2.EchoRequest(payload=b"u"), timeout=5)
            except grpc.aio.AioRpcError as err:
                tally.failed.append(f"{err.code().name}: {err.details()}")
            else:
                tally.ok += 1
                tally.served_by[reply.served_by] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def long_stream(
    stub: echo_pb2_grpc.EchoStub, messages: int, gap_s: float, tally: Tally
) -> list[str]:
    """One bidi stream of `messages` round trips, `gap_s` apart; who answered each."""
    served: list[str] = []
    call = stub.Bidi(timeout=messages * gap_s + 30)
    try:
        for i in range(messages):
            await call.write(echo_pb2.EchoRequest(payload=b"s%d" % i))
            reply = await call.read()
            assert reply is not grpc.aio.EOF, "the stream ended early"
            served.append(reply.served_by)
            await asyncio.sleep(gap_s)
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        tally.ok += 1
    except grpc.aio.AioRpcError as err:
        tally.failed.append(f"stream {err.code().name}: {err.details()}")
    return served


async def watch_connection(
    channel: grpc.aio.Channel, stop: asyncio.Event, changes: list[str]
) -> None:
    """Every connectivity change of `channel` from READY on, until `stop`: a reset
    connection shows as READY -> IDLE / TRANSIENT_FAILURE / CONNECTING."""
    state = channel.get_state(try_to_connect=True)
    while not stop.is_set():
        waiter = asyncio.ensure_future(channel.wait_for_state_change(state))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not waiter.done():
            waiter.cancel()
            break
        new = channel.get_state()
        if state == grpc.ChannelConnectivity.READY or changes:
            changes.append(f"{state.name} -> {new.name}")
        state = new
