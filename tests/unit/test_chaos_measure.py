"""What a chaos run concludes from its records (sidecar/chaos/measure.py, report.py):
phases, expectations held or not, the abort verdict, JUnit XML. Pure: made-up calls."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from sidecar.chaos import measure, report
from sidecar.chaos.measure import Call, Evidence
from sidecar.chaos.spec import parse_scenario

SCENARIO: dict[str, Any] = {
    "name": "s",
    "services": {"cart": {"command": "app {port}", "sites": {"a": 3}}},
    "load": {"service": "cart", "method": "/p.C/M", "rate": 10, "duration_s": 10},
    "steady_state": {"success_ratio": 0.99, "warmup_s": 1},
    "faults": [
        {
            "at_s": 4,
            "action": "kill",
            "expect": {"success_ratio": 0.9, "recovered_within_s": 2, "traffic_moved_within_s": 1},
        },
        {"at_s": 8, "action": "dns_down"},
    ],
}


def _calls(fail_between: tuple[float, float]) -> list[Call]:
    """10 calls a second for 10 s, 5 ms each, failing in [a, b)."""
    a, b = fail_between
    out = []
    for i in range(100):
        t = i / 10
        status = "UNAVAILABLE" if a <= t < b else "OK"
        out.append(Call(t=t, latency=0.005, status=status, deadline=1.0))
    return out


def _samples(address: str, stop_at: float) -> list[tuple[float, Any]]:
    """The victim's attempt counter grows until `stop_at`, then stays."""
    return [
        (
            t / 10,
            {"cart": {"endpoints": [{"address": address, "requests": min(t, int(stop_at * 10))}]}},
        )
        for t in range(100)
    ]


def _verdicts(calls: list[Call], moved_at: float) -> dict[str, bool]:
    sc = parse_scenario(SCENARIO)
    phases = measure.phases(sc, [(0, 4.0, "kill cart-a-0"), (1, 8.0, "dns_down")], 10.0)
    assert [(p.name, p.start, p.end) for p in phases] == [
        ("steady", 1.0, 4.0), ("0: kill cart-a-0", 4.0, 8.0), ("1: dns_down", 8.0, 10.0)
    ]  # fmt: skip
    ev = Evidence(_samples("x:1", moved_at), "cart", {0: "x:1"}, {0: "cart-a-0"})
    return {f"{v.phase}/{v.name}": v.held for v in measure.evaluate(sc, calls, phases, ev)}


def test_a_short_dip_holds_every_expectation() -> None:
    got = _verdicts(_calls((4.0, 4.3)), moved_at=4.5)
    assert all(got.values()), got
    assert "0: kill cart-a-0/traffic moved within 1.0s" in got
    assert "steady/success_ratio >= 0.99" in got


def test_a_long_dip_fails_recovery_and_ratio() -> None:
    got = _verdicts(_calls((4.0, 7.0)), moved_at=7.5)
    failed = sorted(k for k, held in got.items() if not held)
    assert failed == [
        "0: kill cart-a-0/recovered within 2.0s",
        "0: kill cart-a-0/success_ratio >= 0.9",
        "0: kill cart-a-0/traffic moved within 1.0s",
    ]


def test_faults_never_injected_fail() -> None:
    sc = parse_scenario(SCENARIO)
    calls = _calls((0, 0))
    phases = measure.phases(sc, [(0, 4.0, "kill cart-a-0")], 10.0)
    verdicts = measure.evaluate(sc, calls, phases, Evidence())
    missing = [v for v in verdicts if v.name == "fault injected"]
    assert [(v.phase, v.held) for v in missing] == [("1: dns_down", False)]


def test_late_and_unknown_calls_break_the_steady_state() -> None:
    sc = parse_scenario({**SCENARIO, "faults": []})
    calls = _calls((0, 0))
    calls[20].status = "UNKNOWN"
    calls[30].latency = 1.5  # a 1 s deadline
    phases = measure.phases(sc, [], 10.0)
    got = {v.name: v.held for v in measure.evaluate(sc, calls, phases, Evidence())}
    # one failed call of the 90 steady ones: 0.989, under the floor too
    assert got == {"success_ratio >= 0.99": False, "no UNKNOWN": False,
                   "no call past its deadline": False}  # fmt: skip


def test_junit_has_one_case_per_expectation() -> None:
    verdicts = [
        measure.Verdict("steady", "no UNKNOWN", True, "0 UNKNOWN"),
        measure.Verdict("0: kill x", "success_ratio >= 1.0", False, "0.98 of 100 calls"),
    ]
    root = ET.fromstring(report.junit("s", verdicts, 1.5))
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["no UNKNOWN", "success_ratio >= 1.0"]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "0.98 of 100 calls" in (failure.get("message") or "")
    assert root.get("failures") == "1" and root.get("tests") == "2"


def test_without_matplotlib_the_rest_is_written(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No matplotlib: one note says what to install; timeline, calls, summary written."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    calls = _calls((0, 0))
    notes = report.write(tmp_path, "s", calls, [], "cart", [(4.0, "kill x")], {"passed": True})
    assert notes == [report.PLOTS_MISSING] and "grpc-sidecar[plots]" in notes[0]
    assert not (tmp_path / "timeline.png").exists()
    for name in ("timeline.jsonl", "calls.jsonl", "summary.json", "clusters.jsonl"):
        assert (tmp_path / name).stat().st_size > 0 or name == "clusters.jsonl"
