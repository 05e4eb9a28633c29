"""Chaos smoke tier (in `make test`): the scenario files of tests/chaos/scenarios/, run
through the same engine users get (`sidecar chaos run`, sidecar/chaos/runner.py).

Each starts three chaos echo instances (tests/chaos/app.py) behind their sidecars,
registered in the embedded DNS registry, and one caller sidecar under a fixed-rate
load; the scenario's expectations (steady state and per fault) must all hold, and
nothing it started may survive it. Results (summary.json, timeline.jsonl, the PNG,
JUnit XML) go to results/chaos/<scenario>/.
"""

from __future__ import annotations

import pytest

from tests.chaos.scenario import run_scenario_file

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


@pytest.mark.parametrize("name", ["sigkill_one_of_three", "slow_instance", "dns_outage_short"])
async def test_scenario(name: str) -> None:
    """Every expectation of the scenario file holds (the console summary says which not)."""
    await run_scenario_file(name)
