"""The pytest plugin (sidecar/chaos/pytest_plugin.py): registered as a `pytest11` entry
point, and its `chaos_mesh` fixture starts a team's services (here the example echo
service) behind sidecars and injects faults from a plain, synchronous test."""

from __future__ import annotations

import importlib.metadata
import sys
import time
from pathlib import Path

import grpc
import pytest

from meshtest.echo.v1 import echo_pb2, echo_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)

ECHO = {
    "echo": {
        "command": f"{sys.executable} -m services.echo --port {{port}} --name {{name}}",
        "sites": {"a": 3},
        "grpc_services": ["meshtest.echo.v1.Echo"],
        "env": {"PYTHONPATH": str(ROOT)},
    }
}


def test_the_plugin_is_an_entry_point() -> None:
    found = [e.value for e in importlib.metadata.entry_points(group="pytest11")]
    assert "sidecar.chaos.pytest_plugin" in found


def _statuses(stub: echo_pb2_grpc.EchoStub, n: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for _ in range(n):
        try:
            stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=1.0)
            code = "OK"
        except grpc.RpcError as err:
            code = err.code().name
        out[code] = out.get(code, 0) + 1
    return out


def test_faults_from_a_test(chaos_mesh) -> None:  # type: ignore[no-untyped-def]
    """Kill the busiest of three: calls succeed again 2 s later; aborts on the other two
    fail every call UNAVAILABLE; cleared, calls succeed again."""
    mesh = chaos_mesh(ECHO)
    assert len(mesh.endpoints()) == 3
    with grpc.insecure_channel(mesh.target) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        assert _statuses(stub, 30) == {"OK": 30}
        victim = mesh.busiest("echo")
        mesh.kill(victim)
        time.sleep(2.0)
        assert _statuses(stub, 50) == {"OK": 50}
        for inst in mesh.instances("echo"):
            if inst is not victim:
                mesh.abort(inst, "UNAVAILABLE")
        failed = _statuses(stub, 10)
        assert failed.get("UNAVAILABLE", 0) == 10, failed
        for inst in mesh.instances("echo"):
            if inst is not victim:
                mesh.clear_faults(inst)
        # breakers opened by the aborts close again after their reset timeout (5 s)
        end = time.monotonic() + 15.0
        while (last := _statuses(stub, 20)) != {"OK": 20} and time.monotonic() < end:
            time.sleep(0.5)
        assert last == {"OK": 20}
