"""Hedging (gRPC A6, `hedging_policy`) with real processes: three echo backends, one
of them slow (every call waits 500 ms first, the others answer in 5 ms), behind a real
sidecar that round-robins first attempts over them (so a third go to the slow one)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import grpc
import pytest

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.procs import ECHO, Sidecar, echo_admin, free_port, http, sidecar_process
from tests.integration.trio import NAMES, Trio

pytestmark = pytest.mark.timeout(180)
SLOW_MS = 500
FAST_MS = 5
CONCURRENCY = 20


async def run_calls(side: Sidecar, n: int, budget_s: float) -> list[tuple[bool, float, str]]:
    """`n` Echo/Unary calls (bounded: `CONCURRENCY` at a time, and none started after
    `budget_s`): (ok, seconds, served_by)."""
    results: list[tuple[bool, float, str]] = []
    stop = time.monotonic() + budget_s
    left = iter(range(n))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{side.port('outbound')}") as ch:
        stub = echo_pb2_grpc.EchoStub(ch)

        async def worker() -> None:
            for _ in left:
                if time.monotonic() > stop:
                    return
                started = time.monotonic()
                try:
                    reply = await stub.Unary(echo_pb2.EchoRequest(delay_ms=FAST_MS), timeout=5)
                    results.append((True, time.monotonic() - started, reply.served_by))
                except grpc.aio.AioRpcError as err:
                    results.append((False, time.monotonic() - started, str(err.code())))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return results


def p99(results: list[tuple[bool, float, str]]) -> float:
    times = sorted(seconds for _, seconds, _ in results)
    return times[min(len(times) - 1, int(len(times) * 0.99))]


def counter(side: Sidecar, name: str) -> float:
    _, body = http("GET", side.url("/metrics"))
    found = re.search(rf'^{name}\{{upstream="echo"\}} (\S+)$', body.decode(), re.M)
    return float(found.group(1)) if found else 0.0


def hedging(**policy: Any) -> dict[str, Any]:
    return {
        "max_attempts": 3,
        "hedging_delay_ms": 20,
        # a third of the calls need a copy: a budget that covers them (the default 20%
        # would leave some of them waiting for the slow backend, as it should)
        "budget_percent": 60,
        **policy,
    }


async def test_hedging_cuts_the_p99_of_a_slow_endpoint(fresh: Trio) -> None:
    """Without hedging a third of the calls wait for the slow backend (p99 ~ 500 ms);
    with hedging at 20 ms, 2,000 calls all succeed, none answered by the slow backend,
    their p99 under 50 ms (or, on a machine too busy for that, under the hedging delay
    plus twice what a fast backend's answer takes there now). The extra load is
    reported.
    The slow backend sees its losing copies cancelled."""
    trio = fresh
    await echo_admin(trio.addr("a"), delay_ms=SLOW_MS)
    upstream = {"lb": "round_robin", "timeout_ms": 5000}

    with trio.sidecar("unhedged", **upstream) as side:
        baseline = await run_calls(side, 200, budget_s=30)
    assert len(baseline) == 200 and all(ok for ok, _, _ in baseline)
    unhedged_p99 = p99(baseline)
    assert unhedged_p99 >= SLOW_MS / 1000  # the slow backend is in the tail
    # what a call to a fast backend takes on this machine now (it is shared and busy)
    fast_p99 = p99([r for r in baseline if r[2] != "a"])

    before = await trio.calls()
    slow_before = await echo_admin(trio.addr("a"))
    with trio.sidecar("hedged", hedging_policy=hedging(), **upstream) as side:
        results = await run_calls(side, 2000, budget_s=90)
        hedges = counter(side, "sidecar_hedges_total")
        won = counter(side, "sidecar_hedges_won_total")
        cancelled = counter(side, "sidecar_hedges_cancelled_total")
    after = await trio.calls()
    slow_after = await echo_admin(trio.addr("a"))

    assert len(results) == 2000
    failed = [r for r in results if not r[0]]
    assert not failed, failed[:5]
    hedged_p99 = p99(results)
    backend_calls = sum(after.values()) - sum(before.values())
    slow_calls = slow_after["calls"] - slow_before["calls"]
    slow_cancelled = slow_after["cancelled"] - slow_before["cancelled"]
    print(  # the extra load, for the report (pytest -s)
        f"\nhedging: p99 {hedged_p99 * 1000:.1f} ms (unhedged {unhedged_p99 * 1000:.0f} ms, "
        f"fast backends alone {fast_p99 * 1000:.1f} ms); "
        f"{backend_calls} backend calls for 2000 calls (+{backend_calls / 2000 - 1:.1%}); "
        f"{hedges:.0f} hedges sent, {won:.0f} won, {cancelled:.0f} copies cancelled; "
        f"slow backend: {slow_calls} calls, {slow_cancelled} cancelled"
    )
    # the slow backend answers first only when a fast one took longer than the 480 ms
    # head start a copy gives it: never on a quiet machine, at most the tail on a busy one
    assert sum(1 for _, _, who in results if who == "a") <= len(results) // 100
    # the target is 50 ms: a hedge's 20 ms plus a fast answer; on a machine so busy that
    # a fast answer alone takes longer than 15 ms the bound grows with it
    assert hedged_p99 < max(0.05, 0.02 + 2 * fast_p99)
    assert hedged_p99 < unhedged_p99
    assert hedges >= slow_calls / 2  # about a third of first attempts went to a
    # every winning copy reached a backend; a losing one may be cancelled before it did
    assert 2000 + won <= backend_calls <= 2000 + hedges
    assert won >= 1
    assert cancelled >= slow_calls * 0.9
    # the slow backend saw its copies cancelled (RST_STREAM CANCEL reached its grpcio)
    deadline = time.monotonic() + 10
    while slow_cancelled < slow_calls * 0.9 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        stats = await echo_admin(trio.addr("a"))
        slow_cancelled = stats["cancelled"] - slow_before["cancelled"]
    assert slow_cancelled >= slow_calls * 0.9, (slow_cancelled, slow_calls)


async def test_the_budget_bounds_the_copies(fresh: Trio) -> None:
    """With no budget to spend (0% of calls, no minimum), a hedged upstream sends no
    copy at all: calls to the slow backend wait for it, and nothing is hedged."""
    trio = fresh
    await echo_admin(trio.addr("a"), delay_ms=SLOW_MS)
    policy = hedging(budget_percent=0, min_retries_per_s=0)
    with trio.sidecar("no-budget", lb="round_robin", hedging_policy=policy) as side:
        results = await run_calls(side, 60, budget_s=30)
        assert counter(side, "sidecar_hedges_total") == 0
        assert counter(side, "sidecar_hedge_budget_exhausted_total") >= 1
    assert all(ok for ok, _, _ in results)
    assert "a" in {who for _, _, who in results}


async def test_a_route_hedges_its_own_calls(fresh: Trio) -> None:
    """A `routes` entry with its own hedging_policy, in front of an upstream without
    one: the route's calls are hedged (the slow backend answers none of them); calls of the
    other method, routed by grpc_services, are not (the slow backend answers a share)."""
    trio = fresh
    await echo_admin(trio.addr("a"), delay_ms=SLOW_MS)
    cfg = {
        "outbound": {"listen": f"127.0.0.1:{free_port()}"},
        "routes": [
            {
                "match": {"method": "/meshtest.echo.v1.Echo/Unary"},
                "upstream": "echo",
                "hedging_policy": hedging(),
            }
        ],
        "upstreams": {
            "echo": {
                "grpc_services": [ECHO],
                "endpoints": [trio.addr(n) for n in NAMES],
                "lb": "round_robin",
                "timeout_ms": 5000,
            }
        },
    }
    with sidecar_process(trio.tmp, "route-hedged", cfg) as side:
        results = await run_calls(side, 60, budget_s=30)
        hedges = counter(side, "sidecar_hedges_total")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{side.port('outbound')}") as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            streamed = set()
            for _ in range(6):
                async for reply in stub.ServerStream(echo_pb2.EchoRequest(count=1), timeout=5):
                    streamed.add(reply.served_by)
    assert all(ok for ok, _, _ in results)
    # unhedged, a third would be the slow backend's; hedged, none but on a machine so
    # busy that a fast answer takes longer than its head start
    assert sum(1 for _, _, who in results if who == "a") <= len(results) // 10
    assert hedges >= 1
    assert "a" in streamed  # the other method takes the upstream's policy: no hedging
