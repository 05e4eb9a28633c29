"""Issue 6 with real processes: breakers, retry budget, deadlines with a hung backend,
safe retries and stream replay, active health checks. Three echo backends shared by the
module; each test runs its own outbound sidecar, configured for what it shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.conftest import ECHO
from tests.integration.procs import (
    Sidecar,
    echo_admin,
    free_port,
    http,
    sidecar_process,
    wait_until,
)
from tests.integration.trio import NAMES, Trio

pytestmark = pytest.mark.timeout(60)


def endpoint(side: Sidecar, trio: Trio, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        e
        for e in side.get_json("/clusters")["echo"]["endpoints"]
        if e["address"] == trio.addr(name)
    )
    return found


async def unary_calls(
    side: Sidecar, n: int, concurrency: int = 4, deadline_s: float = 2.0, **knobs: Any
) -> list[tuple[grpc.StatusCode, float, str]]:
    """`n` Echo/Unary calls through the sidecar: (status, seconds, served_by or x-sidecar-error)."""
    results: list[tuple[grpc.StatusCode, float, str]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{side.port('outbound')}") as ch:
        stub = echo_pb2_grpc.EchoStub(ch)

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.monotonic()
                try:
                    reply = await stub.Unary(echo_pb2.EchoRequest(**knobs), timeout=deadline_s)
                    results.append(
                        (grpc.StatusCode.OK, time.monotonic() - started, reply.served_by)
                    )
                except grpc.aio.AioRpcError as err:
                    trailers = dict(err.trailing_metadata() or ())
                    why = str(trailers.get("x-sidecar-error", ""))
                    results.append((err.code(), time.monotonic() - started, why))

        share, extra = divmod(n, concurrency)
        await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))
    return results


async def test_breaker_opens_avoids_and_closes_with_retries(fresh: Trio) -> None:
    """One of three fails: its breaker opens, traffic avoids it, callers see >= 99% success;
    once it recovers a probe after the reset timeout closes the breaker."""
    trio = fresh
    with trio.sidecar(
        "breaker",
        lb="round_robin",  # peak_ewma alone would shun "a" after one failure: test the breaker
        retries={"max_attempts": 3, "backoff_base_ms": 2, "backoff_max_ms": 10},
        breaker={"fail_max": 3, "reset_timeout_s": 1.0},
    ) as side:
        await echo_admin(trio.addr("a"), fail=14)
        before = await trio.calls()
        results = await unary_calls(side, 300)
        after = await trio.calls()
        ok = sum(1 for code, _, _ in results if code is grpc.StatusCode.OK)
        assert ok >= 0.99 * len(results), results
        assert all(who != "a" for code, _, who in results if code is grpc.StatusCode.OK)
        a_ep = endpoint(side, trio, "a")
        assert a_ep["breaker_trips"] >= 1, (a_ep, before, after)
        # fail_max per trip, plus one probe per reset timeout: a handful, not a third of 300
        assert after["a"] - before["a"] <= 15, (before, after)
        metrics = side.get_json("/clusters")  # /clusters answers while things change
        assert metrics["echo"]["ejected"] <= metrics["echo"]["max_ejected"]

        await echo_admin(trio.addr("a"), fail=0)

        async def closed() -> bool:
            await unary_calls(side, 8)
            return bool(endpoint(side, trio, "a")["breaker"] == "closed")

        deadline = time.monotonic() + 15
        while not await closed():
            assert time.monotonic() < deadline, endpoint(side, trio, "a")
            await asyncio.sleep(0.2)
        before = await trio.calls()
        await unary_calls(side, 30)
        assert (await trio.calls())["a"] > before["a"]  # back in rotation
        _, body = http("GET", side.url("/metrics"))
        assert b"sidecar_breaker_state{" in body and b"sidecar_breaker_transitions_total{" in body


async def test_all_failing_attempts_stay_in_budget(fresh: Trio) -> None:
    """Every endpoint fails: attempts at the backends <= (1 + 20%) x requests + the minimum."""
    trio = fresh
    with trio.sidecar(
        "budget",
        retries={
            "max_attempts": 3,
            "budget_percent": 20,
            "min_retries_per_s": 1,
            "budget_window_s": 10,
            "backoff_base_ms": 1,
            "backoff_max_ms": 2,
        },
        breaker={"fail_max": 10_000},
        throttling=None,  # the budget alone is under test
    ) as side:
        for n in NAMES:
            await echo_admin(trio.addr(n), fail=14)
        before = await trio.calls()
        n = 150
        results = await unary_calls(side, n)
        after = await trio.calls()
        attempts = sum(after.values()) - sum(before.values())
        assert all(code is grpc.StatusCode.UNAVAILABLE for code, _, _ in results)
        assert n < attempts <= 1.2 * n + 1 * 10, attempts


async def test_hung_backend_ends_at_deadline_and_is_ejected(fresh: Trio) -> None:
    """A hung backend: its calls end with DEADLINE_EXCEEDED at the deadline (not much
    later), it is ejected, and then calls succeed."""
    trio = fresh
    with trio.sidecar(
        "hang", lb="round_robin", breaker={"fail_max": 2, "reset_timeout_s": 30}
    ) as side:
        await echo_admin(trio.addr("b"), hang=True)
        results = await unary_calls(side, 24, concurrency=6, deadline_s=0.5)
        late = [r for r in results if r[0] is not grpc.StatusCode.OK]
        assert late, "no call reached the hung backend"
        for code, seconds, _ in late:
            assert code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert seconds < 0.5 + 1.0
        wait_until(lambda: endpoint(side, trio, "b")["breaker"] == "open", 5, "b ejected")
        results = await unary_calls(side, 20, deadline_s=2)
        assert all(code is grpc.StatusCode.OK for code, _, _ in results), results


async def test_no_retry_after_a_message_was_forwarded(fresh: Trio) -> None:
    """A server stream failing after 2 messages: the caller gets them and the error, and
    the backends saw one call (no retry once something went back)."""
    trio = fresh
    with trio.sidecar("committed", retries={"max_attempts": 3}) as side:
        before = await trio.calls()
        got = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{side.port('outbound')}") as ch:
            call = echo_pb2_grpc.EchoStub(ch).ServerStream(
                echo_pb2.EchoRequest(count=5, fail_after=2, status_code=14), timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for reply in call:
                    got.append(reply.sequence)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert got == [0, 1]
        after = await trio.calls()
        assert sum(after.values()) - sum(before.values()) == 1


async def test_retried_streams_replay_their_messages(fresh: Trio) -> None:
    """Client and bidi streams that hit the failing backend are retried elsewhere, and the
    second backend sees every message."""
    trio = fresh
    with trio.sidecar(
        "replay",
        lb="round_robin",
        retries={"max_attempts": 3, "backoff_base_ms": 1, "backoff_max_ms": 2},
        breaker={"fail_max": 10_000},
    ) as side:
        await echo_admin(trio.addr("a"), fail=14)
        before = await trio.calls()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{side.port('outbound')}") as ch:
            stub = echo_pb2_grpc.EchoStub(ch)

            async def messages() -> AsyncIterator[echo_pb2.EchoRequest]:
                for i in range(50):
                    yield echo_pb2.EchoRequest(payload=str(i).encode())
                    if i % 10 == 0:
                        await asyncio.sleep(0.001)

            for _ in range(6):
                reply = await stub.ClientStream(messages(), timeout=5)
                assert (reply.received, reply.payload, reply.served_by != "a") == (50, b"49", True)
            for _ in range(6):
                call = stub.Bidi(timeout=5)
                for i in range(5):
                    await call.write(echo_pb2.EchoRequest(payload=str(i).encode()))
                await call.done_writing()
                replies = [r async for r in call]
                assert [r.payload for r in replies] == [str(i).encode() for i in range(5)]
                assert {r.served_by for r in replies} <= {"b", "c"}
        after = await trio.calls()
        assert after["a"] - before["a"] >= 2  # some streams went to "a" first and were retried


async def test_active_health_check_takes_endpoint_out(fresh: Trio) -> None:
    """An endpoint whose health check says NOT_SERVING is not picked; back when SERVING."""
    trio = fresh
    with trio.sidecar(
        "health",
        health_check={"interval_s": 0.2, "timeout_s": 0.5, "unhealthy_threshold": 1},
    ) as side:
        await echo_admin(trio.addr("c"), health="NOT_SERVING")
        wait_until(lambda: endpoint(side, trio, "c")["health_check"] is False, 5, "c unhealthy")
        before = await trio.calls()
        results = await unary_calls(side, 30)
        assert all(code is grpc.StatusCode.OK for code, _, _ in results)
        assert (await trio.calls())["c"] == before["c"]
        await echo_admin(trio.addr("c"), health="SERVING")
        wait_until(lambda: endpoint(side, trio, "c")["health_check"] is True, 5, "c healthy")


async def test_per_try_timeout_trips_the_breaker_and_ejects(fresh: Trio) -> None:
    """A hung endpoint's attempts end at the per-try timeout as TIMEOUT
    outcomes, its breaker opens, and retries on other endpoints keep calls succeeding."""
    trio = fresh
    with trio.sidecar(
        "per-try",
        lb="round_robin",  # every endpoint gets its turn: the breaker, not the EWMA, ejects
        per_try_timeout_ms=150,
        retries={"max_attempts": 3, "on": ["UNAVAILABLE", "DEADLINE_EXCEEDED"]},
        breaker={"fail_max": 2, "reset_timeout_s": 30},
    ) as side:
        await echo_admin(trio.addr("b"), hang=True)
        results = await unary_calls(side, 30, concurrency=3, deadline_s=2.0)
        assert all(code is grpc.StatusCode.OK for code, _, _ in results), results
        # a retried call cost one per-try timeout, not the caller's whole deadline
        assert max(seconds for _, seconds, _ in results) < 1.5
        wait_until(lambda: endpoint(side, trio, "b")["breaker"] == "open", 5, "b ejected")
        _, body = http("GET", side.url("/metrics"))
        timeouts = [
            line
            for line in body.decode().splitlines()
            if line.startswith("sidecar_attempts_total{")
            and f'endpoint="{trio.addr("b")}"' in line
            and 'outcome="timeout"' in line
        ]
        assert timeouts and float(timeouts[0].rsplit(" ", 1)[1]) >= 2, timeouts
        before = (await trio.calls())["b"]
        results = await unary_calls(side, 20, deadline_s=2.0)
        assert all(code is grpc.StatusCode.OK for code, _, _ in results), results
        assert (await trio.calls())["b"] == before  # ejected: no more traffic


@contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel does) but never speaks HTTP/2:
    a gRPC channel to it stays CONNECTING."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


async def test_max_pending_fails_fast_while_connecting(trio: Trio) -> None:
    """Calls waiting for a connection count against limits.max_pending;
    beyond it they fail fast with RESOURCE_EXHAUSTED and x-sidecar-error: overloaded,
    while calls on a connected upstream are not held to it."""
    with silent_listener() as port:
        cfg = {
            "outbound": {"listen": f"127.0.0.1:{free_port()}"},
            "upstreams": {
                "echo": {
                    "grpc_services": [ECHO],
                    "endpoints": [f"127.0.0.1:{port}"],
                    "limits": {"max_requests": 100, "max_pending": 2},
                }
            },
        }
        with sidecar_process(trio.tmp, "pending", cfg) as side:
            results = await unary_calls(side, 8, concurrency=8, deadline_s=1.0)
        fast = [r for r in results if r[0] is grpc.StatusCode.RESOURCE_EXHAUSTED]
        waited = [r for r in results if r[0] is grpc.StatusCode.DEADLINE_EXCEEDED]
        assert len(fast) == 6 and len(waited) == 2, results
        assert all(why == "overloaded" and seconds < 0.5 for _, seconds, why in fast), fast
    # Connected: many more concurrent calls than max_pending all go through.
    cfg["upstreams"]["echo"]["endpoints"] = [trio.addr(n) for n in NAMES]  # type: ignore[index]
    with sidecar_process(trio.tmp, "pending-ready", cfg) as side:
        await unary_calls(side, 3)  # connect
        results = await unary_calls(side, 40, concurrency=10)
        assert all(code is grpc.StatusCode.OK for code, _, _ in results), results
