"""Chaos smoke tier (in `make test`): three short scenarios on the usual topology.

BIND 9 serves the SRV zone; every instance (chaos echo app + inbound sidecar)
registers itself and lives in its own network namespace when the tests run as root;
one caller sidecar discovers them and takes a fixed-rate load.
"""

from __future__ import annotations

import pytest

from tests.chaos import checks, timeline
from tests.chaos.harness import Instance, Mesh
from tests.chaos.load import Scenario
from tests.chaos.scenario import (
    busiest,
    check_traffic_moved,
    dns_outage,
    echo_topology,
    failures_after,
    run_load,
    update_summary,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


async def test_sigkill_one_of_three(mesh: Mesh) -> None:
    """SIGKILL one of three instances: >= 99.5% success, its traffic moves within 2 s."""
    instances, caller = echo_topology(mesh, {"a": 3})
    victim: list[Instance] = []

    async def script(sc: Scenario) -> None:
        await sc.at(2.5)
        victim.append(await busiest(caller, "echo", instances))
        victim[0].kill()
        sc.mark(f"SIGKILL {victim[0].name}")

    sc, folder, summary = await run_load(
        "sigkill_one_of_three", caller, script, rate=100, duration=9
    )
    late = failures_after(sc.loop.calls, sc.events[0][0] + 2.0)
    check_traffic_moved(sc, folder, summary, victim[0], within_s=2.0,
                        failures_after_2s=len(late))  # fmt: skip
    assert summary["success_ratio"] >= 0.995, f"success {summary['success_ratio']} (see {folder})"
    assert not late, f"{len(late)} calls failed more than 2 s after the kill (see {folder})"


async def test_slow_instance_loses_its_share(mesh: Mesh) -> None:
    """One instance 10x slower (20 -> 200 ms): its share of traffic falls below 10%."""
    # 20 ms, not less: scheduling noise on a shared 2-core machine reaches tens of ms,
    # and a peak-sensitive EWMA would read that noise as slowness of the fast instances.
    instances, caller = echo_topology(mesh, {"a": 3}, latency_ms=20.0)
    victim: list[Instance] = []

    async def script(sc: Scenario) -> None:
        await sc.at(2.5)
        victim.append(await busiest(caller, "echo", instances))
        await victim[0].set_knobs(latency_ms=200.0)
        sc.mark(f"{victim[0].name} 10x slower")

    sc, folder, summary = await run_load("slow_instance", caller, script, rate=100, duration=10)
    calls, a1 = sc.loop.calls, victim[0]
    t = sc.events[0][0]
    before = timeline.share(calls, a1.name, t - 2.0, t)
    after = timeline.share(calls, a1.name, t + 3.0, 1e9)
    update_summary(
        folder,
        summary,
        victim=a1.name,
        share_before=round(before, 4),
        share_after=round(after, 4),
    )
    checks.clear_failures(calls, folder)
    assert summary["success_ratio"] >= 0.999, f"success {summary['success_ratio']} ({folder})"
    assert after < 0.10, f"the slow instance still got {after:.1%} of calls (see {folder})"


async def test_dns_outage_short(mesh: Mesh) -> None:
    """BIND killed for 8 s: no failed call, no endpoint forgotten, registration catches up."""
    await dns_outage(mesh, "dns_outage_short", 8.0)
