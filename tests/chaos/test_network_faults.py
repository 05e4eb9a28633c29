"""Full chaos tier: a network partition (an iptables DROP rule in the instance's namespace).

Needs root and `ip netns`; skipped with the reason otherwise.
"""

from __future__ import annotations

import pytest

from tests.chaos import checks, timeline
from tests.chaos.harness import Mesh
from tests.chaos.load import Scenario
from tests.chaos.scenario import echo_topology, in_thread, run_load, update_summary

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]


async def test_partition_one_instance(need_netns: None, mesh: Mesh) -> None:
    """One of three instances partitioned: no call outlives its deadline; ejected within 3 s."""
    (_, a1, _), caller = echo_topology(mesh, {"a": 3})

    async def script(sc: Scenario) -> None:
        await sc.at(3.0)
        await in_thread(a1.partition)
        sc.mark(f"partition {a1.name}")

    sc, folder, summary = await run_load("partition", caller, script, rate=100, duration=10)
    a1.heal()
    calls = sc.loop.calls
    t = sc.events[0][0]
    samples = sc.pollers["clusters"].samples
    eject = timeline.eject_time(samples, "echo", a1.address, t)
    moved = timeline.moved_time(samples, "echo", a1.address, t)
    update_summary(folder, summary, eject_s=eject, moved_s=moved)
    checks.clear_failures(calls, folder)
    assert moved is not None and moved <= 3.0, (
        f"traffic still sent to {a1.name} {moved}s after the fault (marked unhealthy after "
        f"{eject}s; see {folder})"
    )
