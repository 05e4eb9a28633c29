"""Full chaos tier: a network partition (an iptables DROP rule in the instance's namespace).

Needs root and `ip netns`; skipped with the reason otherwise.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import Instance, Mesh
from tests.chaos.load import Scenario
from tests.chaos.scenario import busiest, check_traffic_moved, echo_topology, in_thread, run_load

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
    victim[0].heal()
    check_traffic_moved(sc, folder, summary, victim[0], within_s=3.0)
