"""`sidecar run --workers 2`: two processes share the outbound port (SO_REUSEPORT), each
serves its own admin port (configured port + index), and SIGTERM to the supervisor
drains both and exits 0."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import grpc
import pytest
import yaml

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc
from tests.integration.conftest import ECHO
from tests.integration.procs import Proc, echo_process, free_port, http, wait_until

pytestmark = pytest.mark.timeout(60)


def two_free_ports() -> int:
    """A port P with P + 1 free too (admin of worker 0 and worker 1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def served(admin: int) -> float:
    """Outbound requests this worker counted, from its /metrics."""
    _, body = http("GET", f"http://127.0.0.1:{admin}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("sidecar_requests_total{") and 'direction="outbound"' in line:
            total += float(line.rpartition(" ")[2])
    return total


async def test_two_workers_share_the_port_and_drain_on_sigterm(tmp_path: Path) -> None:
    """Calls over many connections reach both workers; SIGTERM: supervisor exits 0."""
    with echo_process(tmp_path) as (_, echo_port):
        port, admin = free_port(), two_free_ports()
        cfg = {
            "outbound": {"listen": f"127.0.0.1:{port}"},
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "drain_grace_s": 2,
            "upstreams": {
                "echo": {"grpc_services": [ECHO], "endpoints": [f"127.0.0.1:{echo_port}"]}
            },
        }
        path = tmp_path / "workers.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = Proc(["-m", "sidecar", "run", "-c", str(path), "--workers", "2"],
                    tmp_path / "workers.log")  # fmt: skip
        try:
            for a in (admin, admin + 1):
                wait_until(lambda a=a: http("GET", f"http://127.0.0.1:{a}/ready")[0] == 200,
                           what=f"worker admin {a}")  # fmt: skip
            for _ in range(40):  # new connections until both workers have served some
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                    reply = await echo_pb2_grpc.EchoStub(ch).Unary(
                        echo_pb2.EchoRequest(payload=b"w"), timeout=5
                    )
                    assert reply.payload == b"w"
                if served(admin) and served(admin + 1):
                    break
            assert served(admin) > 0 and served(admin + 1) > 0, proc.logs()
            proc.popen.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.popen.wait, 20)
            assert code == 0, proc.logs()
            assert proc.logs().count("signal received: stopping") == 2, proc.logs()
        finally:
            proc.stop()
