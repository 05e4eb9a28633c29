"""Full chaos tier: a network partition (an iptables DROP rule in the instance's namespace).

Needs root and `ip netns`; skipped with the reason otherwise.
"""

from __future__ import annotations

import pytest

from tests.chaos import checks, timeline
from tests.chaos.harness import Instance, Mesh
from tests.chaos.load import Scenario
from tests.chaos.scenario import busiest, echo_topology, in_thread, run_load, update_summary

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]


async def test_partition_one_instance(need_netns: None, mesh: Mesh) -> None:
    """One of three instances partitioned: no call outlives its deadline; ejected within 3 s."""
    instances, caller = echo_topology(mesh, {"a": 3})
    victim: list[Instance] = []

    async def script(sc: Scenario) -> None:
        await sc.at(2.5)
        victim.append(await busiest(caller, "echo", instances))
        await in_thread(victim[0].partition)
        sc.mark(f"partition {victim[0].name}")

    sc, folder, summary = await run_load("partition", caller, script, rate=100, duration=10)
    calls, a1 = sc.loop.calls, victim[0]
    a1.heal()
    t = sc.events[0][0]
    samples = sc.pollers["clusters"].samples
    eject = timeline.eject_time(samples, "echo", a1.address, t)
    moved = timeline.moved_time(samples, "echo", a1.address, t)
    update_summary(
        folder,
        summary,
        victim=a1.name,
        victim_share_before=round(timeline.share(calls, a1.name, t - 2.0, t), 4),
        eject_s=eject,
        moved_s=moved,
    )
    checks.clear_failures(calls, folder)
    assert moved is not None and moved <= 3.0, (
        f"traffic still sent to {a1.name} {moved}s after the fault (marked unhealthy after "
        f"{eject}s; see {folder})"
    )
