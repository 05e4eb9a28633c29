"""Traffic policy with real processes: header routes, weighted splits, mirroring with
the shadow hung, and local rate limits (outbound per upstream, inbound per method).
Three echo backends (a, b, c), each its own upstream; a sidecar configured per test;
grpcio clients."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.conftest import ECHO
from tests.integration.procs import Sidecar, echo_admin, free_port, http, sidecar_process
from tests.integration.trio import NAMES, Trio

pytestmark = pytest.mark.timeout(90)

Result = tuple[grpc.StatusCode, str, dict[str, str]]  # status, served_by or reason, trailers


@contextmanager
def routed(trio: Trio, name: str, routes: list[dict[str, Any]], **extra: Any) -> Iterator[Sidecar]:
    """An outbound sidecar with upstreams a, b, c (one backend each; `a` lists the echo
    service) and these routes."""
    upstreams: dict[str, Any] = {
        n: {"endpoints": [trio.addr(n)], "breaker": {"fail_max": 10_000}} for n in NAMES
    }
    upstreams["a"]["grpc_services"] = [ECHO]
    for n, more in extra.pop("upstreams", {}).items():
        upstreams[n].update(more)
    cfg = {
        "outbound": {"listen": f"127.0.0.1:{free_port()}"},
        "upstreams": upstreams,
        "routes": routes,
        **extra,
    }
    with sidecar_process(trio.tmp, name, cfg) as side:
        yield side


async def call(
    stub: echo_pb2_grpc.EchoStub,
    metadata: tuple[tuple[str, str], ...] = (),
    deadline_s: float | None = 5.0,
    **knobs: Any,
) -> Result:
    try:
        reply = await stub.Unary(
            echo_pb2.EchoRequest(**knobs), metadata=metadata, timeout=deadline_s
        )
        return grpc.StatusCode.OK, reply.served_by, {}
    except grpc.aio.AioRpcError as err:
        trailers = {k: str(v) for k, v in (err.trailing_metadata() or ())}
        return err.code(), trailers.get("x-sidecar-error", ""), trailers


def channel(side: Sidecar, listener: str = "outbound") -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{side.port(listener)}")


def metric(side: Sidecar, name: str, **labels: str) -> float:
    _, body = http("GET", side.url("/metrics"))
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rpartition(" ")[2])
    return total


async def test_header_routes_first_match_wins_with_their_own_timeout(fresh: Trio) -> None:
    """exact, regex, present+invert rules in order, then grpc_services; a rule's own
    timeout_ms bounds calls that sent no deadline."""
    routes = [
        {"match": {"headers": [{"name": "x-canary", "exact": "1"}]}, "upstream": "b"},
        {"match": {"headers": [{"name": "x-user", "regex": "user-[0-9]+"}]}, "upstream": "c"},
        {
            "match": {
                "service": ECHO,
                "headers": [
                    {"name": "x-slow", "present": True},
                    {"name": "x-env", "prefix": "prod", "invert": True},
                ],
            },
            "upstream": "c",
            "timeout_ms": 300,
        },
    ]
    with routed(fresh, "header-routes", routes) as side:
        async with channel(side) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            assert (await call(stub, (("x-canary", "1"),)))[:2] == (grpc.StatusCode.OK, "b")
            assert (await call(stub, (("x-canary", "2"),)))[:2] == (grpc.StatusCode.OK, "a")
            assert (await call(stub, (("x-user", "user-42"),)))[1] == "c"
            assert (await call(stub, (("x-user", "user-42x"),)))[1] == "a"  # whole value
            # first match wins: x-canary's rule comes before x-user's
            both = (("x-user", "user-1"), ("x-canary", "1"))
            assert (await call(stub, both))[1] == "b"
            # x-slow without a prod x-env: the 300 ms route timeout ends a 2 s call
            started = time.monotonic()
            code, why, _ = await call(stub, (("x-slow", "1"),), deadline_s=None, delay_ms=2000)
            assert (code, why) == (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout")
            assert time.monotonic() - started < 1.5
            # in prod, the inverted matcher fails: the call goes by grpc_services
            slow_prod = (("x-slow", "1"), ("x-env", "production"))
            assert (await call(stub, slow_prod, delay_ms=500))[:2] == (grpc.StatusCode.OK, "a")


async def test_weighted_split_is_exact_and_hash_on_is_sticky(fresh: Trio) -> None:
    """90/10 over 1,000 calls through one sidecar: within ±1% (smooth weighted round
    robin gives exactly 900/100); with hash_on x-request-id one id keeps one backend."""
    routes = [
        {
            "match": {"headers": [{"name": "x-sticky", "present": True}]},
            "split": [{"upstream": "a", "weight": 50}, {"upstream": "b", "weight": 50}],
            "hash_on": "x-request-id",
        },
        {
            "match": {"service": ECHO},
            "split": [{"upstream": "a", "weight": 90}, {"upstream": "c", "weight": 10}],
        },
    ]
    with routed(fresh, "split", routes) as side:
        async with channel(side) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            results: list[Result] = []

            async def worker(n: int) -> None:
                for _ in range(n):
                    results.append(await call(stub))

            await asyncio.gather(*(worker(250) for _ in range(4)))
            assert all(r[0] is grpc.StatusCode.OK for r in results), results[:5]
            got = Counter(r[1] for r in results)
            assert abs(got["c"] - 100) <= 10 and got["a"] + got["c"] == 1000, got
            for rid in ("req-1", "req-2", "req-3", "req-4"):
                meta = (("x-sticky", "1"), ("x-request-id", rid))
                seen = {(await call(stub, meta))[1] for _ in range(10)}
                assert len(seen) == 1, (rid, seen)
            spread = {(await call(stub, (("x-sticky", "1"), ("x-request-id", f"r{i}"))))[1]
                      for i in range(40)}  # fmt: skip
            assert spread == {"a", "b"}


async def test_mirror_with_the_shadow_hung_never_touches_the_caller(fresh: Trio) -> None:
    """Every call is copied to c, which hangs: the callers' calls (250 ms deadlines) all
    succeed from a; at most max_in_flight copies wait on c, the rest are shed; when c
    fails instead, its failures are counted apart and no caller sees them."""
    routes = [
        {
            "match": {"service": ECHO},
            "upstream": "a",
            "mirror": {"upstream": "c", "max_in_flight": 3, "timeout_ms": 20_000},
        }
    ]
    with routed(fresh, "mirror", routes) as side:
        before = (await echo_admin(fresh.addr("c"), hang=True))["calls"]
        async with channel(side) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            results = [await call(stub, deadline_s=0.25) for _ in range(40)]
            assert all(r[:2] == (grpc.StatusCode.OK, "a") for r in results), results
            assert 1 <= (await echo_admin(fresh.addr("c")))["calls"] - before <= 3
            shed = metric(side, "sidecar_mirror_calls_total", upstream="c", result="shed")
            assert shed >= 37, shed
            await echo_admin(fresh.addr("c"), hang=False, fail=14)
        with routed(fresh, "mirror-fail", routes) as side2:
            async with channel(side2) as ch:
                stub = echo_pb2_grpc.EchoStub(ch)
                results = [await call(stub, deadline_s=2) for _ in range(20)]
                assert all(r[:2] == (grpc.StatusCode.OK, "a") for r in results), results
                await asyncio.sleep(0.3)  # the last copies' answers, fire and forget
            failed = metric(side2, "sidecar_mirror_calls_total", upstream="c", result="failed")
            shed = metric(side2, "sidecar_mirror_calls_total", upstream="c", result="shed")
            assert failed + shed == 20 and failed >= 1, (failed, shed)
            assert metric(side2, "sidecar_requests_total", upstream="c") == 0
            assert metric(side2, "sidecar_requests_total", upstream="a", code="OK") == 20


async def load(stub: echo_pb2_grpc.EchoStub, seconds: float, workers: int) -> list[Result]:
    """Calls as fast as `workers` callers make them, for `seconds` (bounded)."""
    results: list[Result] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        for _ in range(100_000):
            if time.monotonic() >= stop:
                return
            results.append(await call(stub))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return results


def check_rate(
    results: list[Result], started: float, ended: float, rate: float, burst: int
) -> None:
    ok = sum(r[0] is grpc.StatusCode.OK for r in results)
    limited = [r for r in results if r[0] is not grpc.StatusCode.OK]
    assert limited, "nothing was rate limited: the load was too light to test the limit"
    for code, why, trailers in limited:
        assert (code, why) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited"), trailers
        pushback = int(trailers["grpc-retry-pushback-ms"])
        assert 1 <= pushback <= 1000 / rate + 1, pushback
    expected = burst + rate * (ended - started)
    assert abs(ok - expected) <= 0.02 * expected, (ok, expected)


async def test_outbound_rate_limit_per_upstream_within_two_percent(fresh: Trio) -> None:
    """upstreams.a.rate_limit 50/s, burst 25, under more load than that for 4 s: the
    calls let through are within 2% of burst + 50/s * the run; the rest are
    RESOURCE_EXHAUSTED, rate_limited, with a pushback no longer than one token's time.
    (The burst is half a second of tokens so that a stall of the loaded test machine,
    during which the callers send nothing, loses none: the bucket keeps them.)"""
    with routed(
        fresh, "rate-out", [], upstreams={"a": {"rate_limit": {"tokens_per_s": 50, "burst": 25}}}
    ) as side:
        async with channel(side) as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            await ch.channel_ready()
            await asyncio.sleep(1.0)  # the bucket is full again (burst) after the probe
            started = time.monotonic()
            results = await load(stub, 4.0, workers=6)
            ended = time.monotonic()
    check_rate(results, started, ended, 50, 25)


async def test_inbound_rate_limit_per_method_pattern(fresh: Trio) -> None:
    """inbound.rate_limits: Echo/Unary at 40/s burst 20 through the inbound listener,
    within 2% over 4 s; another method pattern has its own bucket."""
    port = free_port()
    cfg = {
        "service": "echo",
        "inbound": {
            "listen": f"127.0.0.1:{port}",
            "app": fresh.addr("a"),
            "health": {"mode": "tcp", "interval_s": 0.2},
            "rate_limits": [
                {"method": f"/{ECHO}/Unary", "tokens_per_s": 40, "burst": 20},
                {"method": f"/{ECHO}/*", "tokens_per_s": 1, "burst": 1},
            ],
        },
    }
    with sidecar_process(fresh.tmp, "rate-in", cfg) as side:
        async with channel(side, "inbound") as ch:
            stub = echo_pb2_grpc.EchoStub(ch)
            await asyncio.sleep(0.5)
            started = time.monotonic()
            results = await load(stub, 4.0, workers=6)
            ended = time.monotonic()
            check_rate(results, started, ended, 40, 20)
            streams = []
            for _ in range(2):
                try:
                    reply = [m async for m in stub.ServerStream(echo_pb2.EchoRequest(count=1))]
                    streams.append(("OK", len(reply)))
                except grpc.aio.AioRpcError as err:
                    streams.append((err.code().name, 0))
            assert streams == [("OK", 1), ("RESOURCE_EXHAUSTED", 0)], streams
        log = side.proc.logs()
        assert not re.search(r"Traceback", log), log[-2000:]


async def test_the_in_process_client_follows_the_same_routes(fresh: Trio) -> None:
    """A channel to `a` (sidecar.client.connect) with the sidecar's own config: header
    routes to b, a 3:1 split over a and c (exact), a mirror to c hung (the callers'
    250 ms calls unaffected), and b's rate limit answering with the pushback."""
    import sidecar.client

    config = {
        "upstreams": {
            "a": {"endpoints": [fresh.addr("a")], "grpc_services": [ECHO]},
            "b": {
                "endpoints": [fresh.addr("b")],
                "rate_limit": {"tokens_per_s": 2, "burst": 1},
            },
            "c": {"endpoints": [fresh.addr("c")]},
        },
        "routes": [
            {"match": {"headers": [{"name": "x-canary", "exact": "1"}]}, "upstream": "b"},
            {
                "match": {"headers": [{"name": "x-split", "present": True}]},
                "split": [{"upstream": "a", "weight": 3}, {"upstream": "c", "weight": 1}],
            },
            {
                "match": {"headers": [{"name": "x-mirror", "present": True}]},
                "upstream": "a",
                "mirror": {"upstream": "c", "max_in_flight": 2, "timeout_ms": 20_000},
            },
        ],
    }
    async with await sidecar.client.connect("a", config) as ch:
        stub = echo_pb2_grpc.EchoStub(ch)
        assert (await call(stub))[:2] == (grpc.StatusCode.OK, "a")
        assert (await call(stub, (("x-canary", "1"),)))[:2] == (grpc.StatusCode.OK, "b")
        code, why, trailers = await call(stub, (("x-canary", "1"),))
        assert (code, why) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
        assert 1 <= int(trailers["grpc-retry-pushback-ms"]) <= 500
        got = Counter([(await call(stub, (("x-split", "1"),)))[1] for _ in range(200)])
        assert got == {"a": 150, "c": 50}, got
        before = (await echo_admin(fresh.addr("c"), hang=True))["calls"]
        results = [await call(stub, (("x-mirror", "1"),), deadline_s=0.25) for _ in range(20)]
        assert all(r[:2] == (grpc.StatusCode.OK, "a") for r in results), results
        assert 1 <= (await echo_admin(fresh.addr("c")))["calls"] - before <= 2
