"""What the chaos scenarios share: the upstream config a caller uses, building the usual
topology, running load with pollers, and writing the results.

Does I/O (through the harness).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.chaos import timeline
from tests.chaos.conftest import record_result
from tests.chaos.harness import ECHO, Instance, Mesh, SidecarProc
from tests.chaos.load import LoadLoop, Poller, Scenario

# What a production caller would configure (and README recommends): peak-EWMA
# balancing, retries of UNAVAILABLE on another endpoint, a breaker per endpoint and
# active health checks, so a dead, hung or partitioned instance is ejected.
ECHO_UPSTREAM: dict[str, Any] = {
    "grpc_services": [ECHO],
    "timeout_ms": 1000,
    "lb": "peak_ewma",
    "retries": {"max_attempts": 3, "on": ["UNAVAILABLE"]},
    "breaker": {"fail_max": 5, "reset_timeout_s": 5.0},
    "health_check": {
        "interval_s": 0.5,
        "timeout_s": 0.3,
        "unhealthy_threshold": 2,
        "healthy_threshold": 1,
    },
}


SCENARIOS = Path(__file__).parent / "scenarios"


async def run_scenario_file(name: str) -> None:
    """tests/chaos/scenarios/NAME.yaml through the chaos engine (`sidecar chaos run`'s):
    fail unless every expectation holds; results in results/chaos/NAME/."""
    from sidecar.chaos.runner import run_scenario
    from sidecar.chaos.spec import load_scenario

    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    folder = timeline.RESULTS / name
    outcome = await run_scenario(scenario, SCENARIOS, folder, folder / "junit.xml")
    record_result(outcome.folder, outcome.summary)
    print(outcome.text)
    assert outcome.passed, outcome.text


def echo_topology(
    mesh: Mesh,
    sites: dict[str, int],
    *,
    caller_site: str = "a",
    upstream: dict[str, Any] | None = None,
    **instance_kwargs: Any,
) -> tuple[list[Instance], SidecarProc]:
    """`sites[site]` echo instances per site and one caller; wait until it knows them all."""
    instances = [
        mesh.add_instance(site, **instance_kwargs) for site, n in sites.items() for _ in range(n)
    ]
    caller = mesh.add_caller(caller_site, {"echo": upstream or ECHO_UPSTREAM})
    mesh.wait_endpoints(caller, "echo", len(instances))
    return instances, caller


async def run_load(
    name: str,
    caller: SidecarProc,
    script: Callable[[Scenario], Awaitable[None]],
    *,
    rate: float,
    duration: float,
    deadline: float = 1.0,
    upstream: str = "echo",
    load: LoadLoop | None = None,
    extra_pollers: dict[str, Poller] | None = None,
) -> tuple[Scenario, Path, dict[str, Any]]:
    """Run `script` under load against `caller`; write the results; return them."""
    load = load or LoadLoop(caller.listen("outbound"), rate, duration, deadline)
    pollers = {"clusters": Poller(caller.url("/clusters"), 0.1), **(extra_pollers or {})}
    sc = Scenario(load, pollers)
    await sc.run(script)
    return sc, *write(name, sc, upstream)


def write(
    name: str, sc: Scenario, upstream: str, extra: dict[str, Any] | None = None
) -> tuple[Path, dict[str, Any]]:
    folder, summary = timeline.write(
        name,
        sc.loop.calls,
        samples=sc.pollers["clusters"].samples if "clusters" in sc.pollers else (),
        upstream=upstream,
        events=sc.events,
        extra={"max_in_flight_client": sc.loop.max_in_flight, **(extra or {})},
    )
    record_result(folder, summary)
    return folder, summary


def update_summary(folder: Path, summary: dict[str, Any], **more: Any) -> None:
    """Add measured values (eject times, shares) to summary.json."""
    import json

    summary.update(more)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness step (start a process, restart BIND) without stalling the load."""
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)
