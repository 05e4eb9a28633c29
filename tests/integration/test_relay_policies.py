"""The h2relay plane's per-try timeouts and Health/Watch, with real processes:
three echo backends (as in test_failure_handling.py), a sidecar configured per test."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.procs import (
    echo_admin,
    free_port,
    http,
    sidecar_process,
)
from tests.integration.test_failure_handling import endpoint, unary_calls
from tests.integration.trio import Trio

pytestmark = pytest.mark.timeout(60)


async def test_per_try_timeout_is_retried_when_listed(fresh: Trio) -> None:
    """b hangs; per_try_timeout_ms 500 with DEADLINE_EXCEEDED in retries.on: every call
    succeeds well before its 8 s deadline, and b's attempts are counted as timeouts."""
    trio = fresh
    with trio.sidecar(
        "pertry-retry",
        lb="round_robin",
        per_try_timeout_ms=500,
        retries={
            "max_attempts": 3,
            "on": ["UNAVAILABLE", "DEADLINE_EXCEEDED"],
            "backoff_base_ms": 1,
            "backoff_max_ms": 2,
        },
        breaker={"fail_max": 10_000},
    ) as side:
        await echo_admin(trio.addr("b"), hang=True)
        results = await unary_calls(side, 12, concurrency=3, deadline_s=8.0)
        failed = [r for r in results if r[0] is not grpc.StatusCode.OK]
        assert not failed, failed
        assert all(seconds < 5.0 for _, seconds, _ in results), results
        assert all(who != "b" for _, _, who in results)
        _, body = http("GET", side.url("/metrics"))
        line = f'endpoint="{trio.addr("b")}",outcome="timeout"'
        assert line.encode() in body, body.decode()[-2000:]


async def test_per_try_timeout_not_listed_ends_the_call(fresh: Trio) -> None:
    """b hangs, retries.on without DEADLINE_EXCEEDED: calls sent to b end after the
    300 ms per-try timeout (not the 4 s deadline) as DEADLINE_EXCEEDED with
    `x-sidecar-error: timeout`, and b's breaker opens on those timeouts."""
    trio = fresh
    with trio.sidecar(
        "pertry-stop",
        lb="round_robin",
        per_try_timeout_ms=300,
        retries={"max_attempts": 3},
        breaker={"fail_max": 2, "reset_timeout_s": 30},
    ) as side:
        await echo_admin(trio.addr("b"), hang=True)
        results = await unary_calls(side, 9, concurrency=3, deadline_s=4.0)
        failed = [r for r in results if r[0] is not grpc.StatusCode.OK]
        assert failed, "no call reached the hung backend"
        for code, seconds, why in failed:
            assert (code, why) == (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout")
            assert 0.25 < seconds < 2.0, seconds
        assert endpoint(side, trio, "b")["breaker"] == "open"


async def test_health_watch_streams_and_turns_not_serving_on_drain(
    fresh: Trio, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Health/Watch on the relay's inbound listener: SERVING first, NOT_SERVING once the
    sidecar drains; an unknown service gets SERVICE_UNKNOWN (and is not an error)."""
    trio = fresh
    port = free_port()
    cfg = {
        "service": "echo",
        "inbound": {
            "listen": f"127.0.0.1:{port}",
            "app": trio.addr("a"),
            "health": {"interval_s": 0.2},
        },
        "drain_grace_s": 5,
    }
    tmp = tmp_path_factory.mktemp("watch")
    with sidecar_process(tmp, "watch", cfg) as side:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            unknown = stub.Watch(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
            first = await asyncio.wait_for(unknown.read(), 5)
            assert first.status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            unknown.cancel()
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="echo"), timeout=10)
            first = await asyncio.wait_for(watch.read(), 5)
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            started = time.monotonic()
            status, _ = http("POST", side.url("/drain"))
            assert status in (200, 202, 204), status
            second = await asyncio.wait_for(watch.read(), 5)
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert time.monotonic() - started < 3
            watch.cancel()
