"""The shipped fake upstream (sidecar/testing/upstream.py) as a gRPC client sees it,
through the pool's own client connection on the fake network: each step on the wire,
at its fake time, and what it records of each stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from sidecar.endpoint import Endpoint
from sidecar.h2relay import frames as F
from sidecar.h2relay.grpc_client import Answer, ClientStream, frame, request_block, request_head
from sidecar.h2relay.pool import Pool
from sidecar.testing import FakeClock, FakeUpstream, Hang, Reply, Reset

ADDRESS = "10.1.0.1:7000"


def open_call(pool: Pool, message: bytes, unary: bool = True) -> ClientStream:
    block = request_block(request_head("/x.Y/Z", "fake"), (("k", "v"),), 1.0)
    stream = ClientStream(pool.loop, block, 1 << 20, unary=unary)
    stream.send(frame(message), True)
    stream.start(pool.get(Endpoint("10.1.0.1", 7000)))
    return stream


def run(upstream: FakeUpstream, main: Callable[[FakeClock], Coroutine[Any, Any, None]]) -> None:
    clock = FakeClock()
    upstream.serve(clock.network, ADDRESS)
    clock.run(main(clock))


def test_a_reply_carries_its_headers_messages_and_trailers() -> None:
    upstream = FakeUpstream(
        Reply(messages=[b"a", b"bc"], headers=[("h", "1")], trailers=[("t", "2")]),
    )
    answers: list[Answer] = []
    chunks: list[bytes | None] = []

    async def main(clock: FakeClock) -> None:
        stream = open_call(Pool(clock=clock), b"req", unary=False)
        answers.append(await stream.ended)
        chunks.extend([stream.take(), stream.take()])

    run(upstream, main)
    assert answers[0].code == "OK"
    assert ("h", "1") in answers[0].headers and ("t", "2") in answers[0].trailers
    assert chunks == [b"a", b"bc"]
    seen = upstream.streams[0]
    assert (seen.method, seen.headers["k"], seen.timeout) == ("/x.Y/Z", "v", "1000000u")
    assert seen.messages() == [b"req"] and seen.ended_at is not None


def test_an_error_without_messages_is_trailers_only_with_the_sidecar_error() -> None:
    upstream = FakeUpstream(Reply("UNAVAILABLE", message="no", sidecar_error="overloaded"))
    answers: list[Answer] = []

    async def main(clock: FakeClock) -> None:
        answers.append(await open_call(Pool(clock=clock), b"x").ended)

    run(upstream, main)
    answer = answers[0]
    assert (answer.code, answer.details, answer.headers) == ("UNAVAILABLE", "no", ())
    assert ("x-sidecar-error", "overloaded") in answer.trailers


def test_steps_act_after_their_delay_and_a_reset_is_relayed() -> None:
    upstream = FakeUpstream(Reset(F.REFUSED_STREAM, delay_s=0.5))
    times: list[float] = []

    async def main(clock: FakeClock) -> None:
        stream = open_call(Pool(clock=clock), b"x")
        await clock.advance(0.499)
        assert not stream.ended.done()
        await clock.advance(0.001)
        assert stream.ended.result().code == "UNAVAILABLE"  # REFUSED_STREAM, as gRPC maps it
        times.append(clock())

    run(upstream, main)
    assert upstream.streams[0].answered_at == times[0]


def test_a_hanging_stream_records_the_callers_reset() -> None:
    upstream = FakeUpstream(Hang())

    async def main(clock: FakeClock) -> None:
        stream = open_call(Pool(clock=clock), b"x")
        await clock.advance(1.0)
        stream.cancel()
        await clock.settle()

    run(upstream, main)
    seen = upstream.streams[0]
    assert (seen.reset, seen.reset_at, seen.answered_at) == (F.CANCEL, 1001.0, None)


def test_a_stream_past_the_script_is_answered_internal() -> None:
    upstream = FakeUpstream(Reply())
    codes: list[str] = []

    async def main(clock: FakeClock) -> None:
        pool = Pool(clock=clock)
        for _ in range(2):
            codes.append((await open_call(pool, b"x").ended).code)
        await asyncio.sleep(0)

    run(upstream, main)
    assert codes == ["OK", "INTERNAL"] and upstream.unscripted == 1
