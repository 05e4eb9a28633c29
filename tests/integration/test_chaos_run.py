"""`sidecar chaos run` end to end, as a user runs it: real app processes (the example echo
service), real sidecars, the embedded DNS registry, a scenario file in a temp folder.

Each asserts the exit code, the files written, and that no process of the run is left
(by the run's marker in /proc, whose id starts with the CLI's own pid).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.chaos.procs import RUN_ENV

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def scenario(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "echo-kill",
        "stubs": ["stubs"],
        "services": {
            "echo": {
                "command": f"{sys.executable} -m services.echo --port {{port}} --name {{name}}",
                "sites": {"a": 3},
                "grpc_services": ["meshtest.echo.v1.Echo"],
                "env": {"PYTHONPATH": str(ROOT)},
            }
        },
        "load": {
            "service": "echo",
            "method": "/meshtest.echo.v1.Echo/Unary",
            "request": {"json": {"payload": "aGVsbG8="}},
            "rate": 50,
            "duration_s": 7,
            "deadline_ms": 1000,
        },
        "steady_state": {"success_ratio": 0.99, "warmup_s": 0.5},
        "faults": [
            {
                "at_s": 2.5,
                "action": "kill",
                "expect": {
                    "success_ratio": 0.95,
                    "recovered_within_s": 2,
                    "traffic_moved_within_s": 2,
                },
            }
        ],
    }
    base.update(changes)
    return base


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder with stubs made by `sidecar stubs` from the project's protos."""
    path = tmp_path_factory.mktemp("chaos-user")
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "stubs", str(ROOT / "proto"), "--out", "stubs"],
        cwd=path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


def survivors(pid: int) -> list[str]:
    marker = f"{RUN_ENV}={pid}-".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and any(e.startswith(marker) for e in env):
            found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}")
    return found


def run(folder: Path, data: dict[str, Any], *extra: str) -> tuple[int, str, Path]:
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = folder / "results" / data["name"]
    cmd = [sys.executable, "-m", "sidecar", "chaos", "run", str(path), "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    text, _ = proc.communicate(timeout=150)
    assert survivors(proc.pid) == [], text
    return proc.returncode, text, out


def test_kill_one_of_three_holds(folder: Path) -> None:
    """Exit 0; JUnit with every expectation as a passing test case; PNG and timeline."""
    junit = folder / "junit-kill.xml"
    code, text, out = run(folder, scenario(), "--junit", str(junit))
    assert code == 0, text
    cases = ET.parse(junit).getroot().findall(".//testcase")
    names = {c.get("name") for c in cases}
    assert {"success_ratio >= 0.95", "recovered within 2.0s", "traffic moved within 2.0s",
            "success_ratio >= 0.99", "no UNKNOWN"} <= names  # fmt: skip
    assert all(c.find("failure") is None for c in cases)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["aborted"] is None
    assert [p["phase"].split(" ")[1] for p in summary["phases"][1:]] == ["kill"]
    assert (out / "timeline.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert any(r.get("event", "").startswith("kill echo-a-") for r in rows)
    assert "summary per phase" in text and "steady" in text


@pytest.mark.slow  # make test has it from the installed wheel (test_installed_wheel.py)
def test_an_impossible_expectation_fails_naming_it(folder: Path) -> None:
    """A latency expectation no call can meet: exit 1, the expectation named on the console
    and as the one failed JUnit case."""
    data = scenario(name="echo-impossible")
    data["faults"][0]["expect"]["p99_ms"] = 0.001
    code, text, out = run(folder, data)
    assert code == 1, text
    assert "FAILED [0: kill echo-a-" in text and "p99_ms <= 0.001" in text
    root = ET.parse(out / "junit.xml").getroot()
    failed = [c.get("name") for c in root.findall(".//testcase") if c.find("failure") is not None]
    assert failed == ["p99_ms <= 0.001"]


def test_abort_rule_stops_injecting(folder: Path) -> None:
    """The whole (only) site down: success falls under the floor, the next fault is never
    injected, the run says so and fails."""
    data = scenario(name="echo-abort")
    data["load"]["duration_s"] = 6
    data["faults"] = [
        {"at_s": 2, "action": "site_down", "site": "a"},
        {"at_s": 5, "action": "dns_down"},
    ]
    data["abort"] = {"success_below": 0.5, "window_s": 1.0}
    code, text, out = run(folder, data)
    assert code == 1, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aborted"] and "fell below 0.5" in summary["aborted"]
    failed = {v["name"] for v in summary["expectations"] if not v["held"]}
    assert {"abort rule not triggered", "fault injected"} <= failed
    assert not any(e["event"] == "dns_down" for e in summary["events"])


def test_a_bad_scenario_is_refused_with_key_and_reason(folder: Path) -> None:
    data = scenario(name="echo-bad")
    data["faults"][0]["action"] = "explode"
    code, text, _ = run(folder, data)
    assert code == 2
    assert "faults.0.action" in text


def test_interrupted_run_leaves_nothing(folder: Path) -> None:
    """SIGINT mid-load (Ctrl-C): exit 130 and every process it started is gone."""
    data = scenario(name="echo-interrupt")
    data["load"]["duration_s"] = 30
    data["faults"][0]["at_s"] = 20
    path = folder / "interrupt.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "chaos", "run", str(path), "--out", str(folder / "i")],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "load started" in line or time.monotonic() > deadline:
            break
    assert survivors(proc.pid), "nothing was running before the interrupt"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest
    assert survivors(proc.pid) == []


@pytest.mark.slow
def test_the_example_demo_scenario_holds(tmp_path: Path) -> None:
    """examples/chaos/demo.yaml (the demo's view and data services): exit 0."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "sidecar", "chaos", "run", str(ROOT / "examples/chaos/demo.yaml"),
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=170,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert (out / "junit.xml").exists()


@pytest.mark.slow
def test_every_fault_kind_is_injected_and_undone(folder: Path) -> None:
    """Closed-loop load with raw bytes; stop, latency, abort, partition, DNS down, scale out,
    scale in and a site down, one after another in two sites: each injected (and undone
    after its duration), the run's expectations hold, nothing left running."""
    data = scenario(name="echo-every-fault")
    data["services"]["echo"]["sites"] = {"a": 3, "b": 1}
    data["load"] = {
        "service": "echo",
        "method": "/meshtest.echo.v1.Echo/Unary",
        "request": {"base64": "CgVjaGFvcw=="},  # EchoRequest(payload=b"chaos")
        "concurrency": 4,
        "duration_s": 26,
        "deadline_ms": 1000,
    }
    data["faults"] = [
        {"at_s": 2, "action": "stop", "duration_s": 2, "expect": {"traffic_moved_within_s": 2}},
        {"at_s": 5, "action": "latency", "ms": 300, "duration_s": 2},
        {"at_s": 8, "action": "abort", "percent": 50, "duration_s": 2},
        {"at_s": 11, "action": "partition", "duration_s": 2},
        {"at_s": 14, "action": "dns_down", "duration_s": 2, "expect": {"endpoints_kept": True}},
        # in site b: site a's instances, a new one too, go down at 21 s
        {"at_s": 16, "action": "scale_out", "site": "b", "expect": {"discovered_within_s": 8}},
        {"at_s": 19, "action": "scale_in", "target": "echo-a-0"},
        {"at_s": 21, "action": "site_down", "site": "a", "expect": {"recovered_within_s": 2}},
    ]
    code, text, out = run(folder, data)
    assert code == 0, text
    events = [e["event"] for e in json.loads((out / "summary.json").read_text())["events"]]
    for prefix in ("stop echo-", "latency echo-", "abort echo-", "partition echo-", "dns_down",
                   "scale out: echo-b-1", "scale in echo-a-0", "site a down"):  # fmt: skip
        assert any(e.startswith(prefix) for e in events), (prefix, events)
    for undone in ("resumed", "latency cleared", "abort cleared", "DNS back", "echo-b-1 ready"):
        assert any(undone in e for e in events), (undone, events)
