"""The load generator against a real perimeter, and a service run as its own process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import loadgen
from services.runtime import Running

from .conftest import PLAYLISTS, TOKEN, TRACKS

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(40)


async def test_loadgen_smoke(ap: Running) -> None:
    """A short run writes one JSON line per second plus a summary whose counts add up."""
    args = loadgen.build_parser().parse_args(
        ["--target", ap.address, "--rate", "40", "--duration", "1.5", "--token", TOKEN,
         "--playlists", PLAYLISTS, "--deadline-ms", "1000"]
    )  # fmt: skip
    out = io.StringIO()
    summary = await loadgen.run(args, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    seconds, final = lines[:-1], lines[-1]
    assert [s["second"] for s in seconds] == [0, 1]
    assert final == summary and final["summary"] is True
    assert final["count"] == 60 == sum(s["count"] for s in seconds)
    assert sum(final["status"].values()) == final["count"]
    assert final["ok"] == final["status"].get("OK", 0) >= 57
    assert set(final["kinds"]) <= {"open", "prefetch", "search"} and final["kinds"]["open"] > 30
    assert 0 < final["p50_ms"] <= final["p99_ms"] < 1000


async def test_loadgen_counts_failures(ap: Running, data: dict[str, Running]) -> None:
    """Failures are counted by status with their relayed cause, and never lost."""
    from services.knobs import set_knobs

    await set_knobs(data["playlist"].address, fail_ratio=1.0)
    await set_knobs(data["search"].address, fail_ratio=1.0)
    args = loadgen.build_parser().parse_args(
        ["--target", ap.address, "--rate", "30", "--duration", "1", "--token", TOKEN,
         "--playlists", PLAYLISTS]
    )  # fmt: skip
    summary = await loadgen.run(args, io.StringIO())
    assert summary["count"] == 30 and summary["ok"] == 0
    assert summary["status"] == {"UNAVAILABLE": 30}
    assert set(summary["causes"]) <= {"playlistview>playlist:UNAVAILABLE", "search:UNAVAILABLE"}
    assert sum(summary["causes"].values()) == 30


async def test_service_process_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    """`python -m services.metadata` answers health, then exits 0 promptly on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.metadata", "--port", "0", "--db", str(tmp_path / "m.db"),
        "--tracks", TRACKS, "--name", "meta-p", "--grace", "0.5",
        cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        port = None
        for _ in range(50):
            line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
            if "serving" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, "no 'serving' log line"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
