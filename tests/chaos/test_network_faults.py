"""Full tier: a network partition (an iptables DROP rule in the instance's namespace),
tests/chaos/scenarios/partition.yaml through the chaos engine.

Needs root and `ip netns`; skipped with the reason otherwise.
"""

from __future__ import annotations

import pytest

from tests.chaos.scenario import run_scenario_file

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(180)]


async def test_partition_one_instance(need_netns: None) -> None:
    """One of three instances partitioned: no call outlives its deadline; ejected within 3 s."""
    await run_scenario_file("partition")
