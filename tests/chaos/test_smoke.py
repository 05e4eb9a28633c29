"""Chaos smoke tier (runs in `make test`): short scenarios on the usual topology.

BIND 9 serves the SRV zone; every instance (chaos echo app + inbound sidecar)
registers itself and lives in its own network namespace when the tests run as root.
"""

from __future__ import annotations

import pytest

from tests.chaos import checks, timeline
from tests.chaos.harness import Mesh
from tests.chaos.scenario import echo_topology, failures_after, run_load, update_summary

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


async def test_sigkill_one_of_three(mesh: Mesh) -> None:
    """SIGKILL one of three instances: >= 99.5% success, its traffic moves within 2 s."""
    (a0, a1, a2), caller = echo_topology(mesh, {"a": 3})
    kill_at = 3.0

    async def script(sc):  # type: ignore[no-untyped-def]
        await sc.at(kill_at)
        a1.kill()
        sc.mark(f"SIGKILL {a1.name}")

    sc, folder, summary = await run_load(
        "sigkill_one_of_three", caller, script, rate=100, duration=9
    )
    calls = sc.loop.calls
    killed_at = sc.events[0][0]
    eject = timeline.eject_time(sc.pollers["clusters"].samples, "echo", a1.address, killed_at)
    late = failures_after(calls, killed_at + 2.0)
    update_summary(folder, summary, eject_s=eject, failures_after_2s=len(late))
    checks.clear_failures(calls, folder)
    assert summary["success_ratio"] >= 0.995, f"success {summary['success_ratio']} (see {folder})"
    assert eject is not None and eject <= 2.0, f"ejected after {eject}s (see {folder})"
    assert not late, f"{len(late)} calls failed more than 2 s after the kill (see {folder})"
    assert timeline.share(calls, a1.name, killed_at + 2.0, 1e9) == 0.0
