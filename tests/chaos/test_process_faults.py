"""Full chaos tier: process-level faults (hang, a whole site down, scale out and in).

These run on loopback too; with root each instance has its own network namespace.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos import checks, timeline
from tests.chaos.harness import Instance, Mesh
from tests.chaos.load import Scenario
from tests.chaos.scenario import (
    echo_topology,
    in_thread,
    run_load,
    run_scenario_file,
    update_summary,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.mark.parametrize("detection", ["health_checks", "breaker_only"])
async def test_sigstop_hang(detection: str) -> None:
    """SIGSTOP one of three instances: no call outlives its deadline; ejected within 3 s,
    with active health checks and with passive detection (breakers, the default) alone
    (tests/chaos/scenarios/sigstop_hang_*.yaml, through the chaos engine)."""
    await run_scenario_file(f"sigstop_hang_{detection}")


async def test_whole_site_down_fails_over(mesh: Mesh) -> None:
    """Every site-a instance killed: calls fail over to site b; >= 99% success."""
    instances, caller = echo_topology(mesh, {"a": 2, "b": 2})
    local = [i for i in instances if i.site == "a"]

    async def script(sc: Scenario) -> None:
        await sc.at(3.0)
        for inst in local:
            inst.kill()
        sc.mark("site a's echo killed")

    sc, folder, summary = await run_load("whole_site_down", caller, script, rate=100, duration=10)
    calls = sc.loop.calls
    t = sc.events[0][0]
    before_local = sum(timeline.share(calls, i.name, 0.5, t) for i in local)
    after_remote = 1.0 - sum(timeline.share(calls, i.name, t + 2.0, 1e9) for i in local)
    update_summary(
        folder,
        summary,
        local_share_before=round(before_local, 4),
        remote_share_after=round(after_remote, 4),
    )
    checks.clear_failures(calls, folder)
    assert before_local >= 0.9, f"site a served only {before_local:.1%} before ({folder})"
    assert summary["success_ratio"] >= 0.99, f"success {summary['success_ratio']} ({folder})"


async def test_scale_out_and_in_with_drain(mesh: Mesh) -> None:
    """Two instances added, then one drained and stopped, under load: no failed call."""
    drain_grace = {"drain_grace_s": 5.0}
    (a0, _), caller = echo_topology(mesh, {"a": 2}, sidecar=drain_grace)
    added: list[Instance] = []
    timing: dict[str, float] = {}

    async def script(sc: Scenario) -> None:
        await sc.at(2.0)
        for _ in range(2):
            added.append(await in_thread(mesh.add_instance, "a", sidecar=drain_grace))
        timing["out"] = sc.mark("scaled out to 4")
        await sc.at(timing["out"] + 4.0)
        assert a0.drain() == 200
        timing["drain"] = sc.mark(f"drain {a0.name}")
        await asyncio.sleep(6.0)
        await in_thread(a0.stop)
        timing["stop"] = sc.mark(f"SIGTERM {a0.name}")

    sc, folder, summary = await run_load("scale_out_in", caller, script, rate=60, duration=20)
    calls = sc.loop.calls
    new_share = sum(
        timeline.share(calls, i.name, timing["out"] + 2.0, timing["drain"]) for i in added
    )
    drained_after = timeline.share(calls, a0.name, timing["drain"] + 4.0, 1e9)
    update_summary(
        folder,
        summary,
        new_share=round(new_share, 4),
        drained_share_after_4s=round(drained_after, 4),
    )
    checks.clear_failures(calls, folder)
    assert summary["ok"] == summary["count"], f"failed calls: {summary['status']} ({folder})"
    assert new_share >= 0.25, f"the added instances got only {new_share:.1%} ({folder})"
    assert drained_after == 0.0, f"the drained instance still answered {drained_after:.1%}"
