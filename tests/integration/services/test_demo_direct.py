"""The demo orchestrator as a real process tree, without sidecars (`--direct`).

The sidecar-mode run is tested in test_demo_sidecars.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SMALL = ["--tracks", "2000", "--playlists", "200", "--rate", "20", "--no-dashboard"]
pytestmark = pytest.mark.timeout(90)


def survivors(demo_id: str) -> list[int]:
    """PIDs of live processes carrying this demo's id in their environment."""
    marker = f"SIDECAR_DEMO_ID={demo_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    status = (entry / "stat").read_text().split()[2]
                    if status != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


async def start_demo(tmp_path: Path, demo_id: str, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.demo", "--workdir", str(tmp_path / "w"),
        "--demo-id", demo_id, *SMALL, *extra,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def test_demo_direct_runs_the_story_and_exits_zero(tmp_path: Path) -> None:
    """Both sites serve the walk in steady state, every phase has traffic, exit 0, no orphans."""
    demo_id = uuid.uuid4().hex
    summary = tmp_path / "summary.json"
    proc = await start_demo(
        tmp_path, demo_id, "--direct", "--duration", "8", "--summary-out", str(summary)
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 80)
    assert proc.returncode == 0, out.decode()[-2000:]
    result = json.loads(summary.read_text())
    steady = [r for r in result["phases"] if r["phase"] == "steady"]
    assert {r["site"] for r in steady} == {"lon3", "sto3"}
    assert all(r["count"] > 0 and r["success_ratio"] >= 0.9 for r in steady)
    assert all(r["count"] > 0 for r in result["phases"] if r["phase"] != "cooldown")
    assert {"lon3", "sto3"} <= set(result["loadgen"])  # plus the overload burst
    assert b"summary per phase and site" in out
    assert survivors(demo_id) == []


async def test_demo_sigterm_leaves_no_orphans(tmp_path: Path) -> None:
    """SIGTERM mid-run stops the demo promptly and every process it started."""
    demo_id = uuid.uuid4().hex
    proc = await start_demo(tmp_path, demo_id, "--direct", "--duration", "60")
    lines = tmp_path / "w" / "loadgen-lon3.jsonl"
    for _ in range(300):
        if lines.exists() and lines.stat().st_size > 0:
            break
        await asyncio.sleep(0.1)
    assert len(survivors(demo_id)) >= 16
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode in (0, 130)
    for _ in range(20):  # a killed group may take a moment to be reaped by init
        if not survivors(demo_id):
            break
        await asyncio.sleep(0.1)
    assert survivors(demo_id) == []
