"""Admin endpoints, inbound health, drain, SIGTERM and config refusal on real processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.conftest import Mesh
from tests.integration.procs import ROOT, free_port, http, port_open, sidecar_process

pytestmark = pytest.mark.timeout(60)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(addr: str, service: str = "") -> Any:
    async with grpc.aio.insecure_channel(addr) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return reply.status


def inbound_cfg(app_port: int, **extra: Any) -> dict[str, Any]:
    return {
        "service": "echo",
        "inbound": {
            "listen": f"127.0.0.1:{free_port()}",
            "app": f"127.0.0.1:{app_port}",
            "health": {"interval_s": 0.2, "timeout_s": 0.5},
        },
        **extra,
    }


async def test_admin_endpoints(mesh: Mesh) -> None:
    """/live, /ready (with reasons), /metrics, /clusters and /config_dump answer."""
    async with grpc.aio.insecure_channel(mesh.outbound_addr) as ch:
        await echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(), timeout=5)
    assert http("GET", mesh.outbound.url("/live"))[0] == 200
    assert http("GET", mesh.inbound.url("/ready"))[0] == 200
    status, body = http("GET", mesh.outbound.url("/ready"))
    assert status == 503
    assert json.loads(body)["reasons"] == ["upstream empty has no endpoints"]
    status, metrics = http("GET", mesh.outbound.url("/metrics"))
    assert status == 200
    assert (
        b'sidecar_requests_total{code="OK",direction="outbound",'
        b'method="/meshtest.echo.v1.Echo/Unary",upstream="echo"}' in metrics
    )
    assert b"sidecar_request_duration_seconds_bucket" in metrics
    clusters = mesh.outbound.get_json("/clusters")
    assert clusters["echo"]["endpoints"][0]["address"] == mesh.inbound_addr
    assert clusters["echo"]["endpoints"][0]["requests"] >= 1
    dump = mesh.outbound.get_json("/config_dump")
    assert dump["upstreams"]["echo"]["endpoints"] == [mesh.inbound_addr]


async def test_inbound_health_reflects_app(mesh: Mesh, tmp_path: Path) -> None:
    """The inbound listener answers Health/Check itself: SERVING with its app up,
    NOT_SERVING (and calls get connect_failed) with its app down."""
    assert await health_of(mesh.inbound_addr) == SERVING
    assert await health_of(mesh.inbound_addr, "echo") == SERVING
    dead = free_port()
    with sidecar_process(tmp_path, "noapp", inbound_cfg(dead), wait="/live") as side:
        addr = f"127.0.0.1:{side.port('inbound')}"
        assert await health_of(addr) == NOT_SERVING
        async with grpc.aio.insecure_channel(addr) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(), timeout=5)
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert dict(err.value.trailing_metadata())["x-sidecar-error"] == "connect_failed"
        assert "local app" in (err.value.details() or "")


async def test_post_drain(mesh: Mesh, tmp_path: Path) -> None:
    """POST /drain: health NOT_SERVING and /ready 503 at once; calls still served in the grace."""
    cfg = inbound_cfg(mesh.echo_port, drain_grace_s=30)
    with sidecar_process(tmp_path, "drain", cfg) as side:
        addr = f"127.0.0.1:{side.port('inbound')}"
        assert await health_of(addr) == SERVING
        assert http("POST", side.url("/drain"))[0] == 200
        assert await health_of(addr) == NOT_SERVING
        status, body = http("GET", side.url("/ready"))
        assert (status, json.loads(body)["reasons"]) == (503, ["draining"])
        async with grpc.aio.insecure_channel(addr) as ch:
            reply = await echo_pb2_grpc.EchoStub(ch).Unary(echo_pb2.EchoRequest(payload=b"d"))
        assert reply.payload == b"d"


async def test_sigterm_finishes_in_flight_and_exits_0(mesh: Mesh, tmp_path: Path) -> None:
    """SIGTERM: the in-flight call completes, new connections are refused, exit code 0."""
    cfg = inbound_cfg(mesh.echo_port, drain_grace_s=5)
    with sidecar_process(tmp_path, "term", cfg) as side:
        port = side.port("inbound")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = echo_pb2_grpc.EchoStub(ch).Unary(
                echo_pb2.EchoRequest(payload=b"late", delay_ms=800), timeout=10
            )
            # wait until the call is in flight inside the sidecar
            end = time.monotonic() + 5
            while (
                b'sidecar_requests_in_flight{direction="inbound",upstream="app"} 1.0'
                not in http("GET", side.url("/metrics"))[1]
            ):
                assert time.monotonic() < end
                await asyncio.sleep(0.02)
            side.proc.popen.send_signal(signal.SIGTERM)
            reply = await call
            assert reply.payload == b"late"
        code = await asyncio.to_thread(side.proc.popen.wait, 10)
        assert code == 0, side.proc.logs()
        assert not port_open(port)


def test_bad_config_refused(tmp_path: Path) -> None:
    """A bad config: exit non-zero naming the key, nothing started."""
    port = free_port()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"outbound: {{listen: '127.0.0.1:{port}'}}\nupstreams:\n  x:\n    timeout_ms: -1\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "sidecar", "run", "-c", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "upstreams.x.timeout_ms" in out.stderr
    assert not port_open(port)
