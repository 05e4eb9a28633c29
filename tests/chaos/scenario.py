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
from tests.chaos.load import Call, LoadLoop, Poller, Scenario

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


def failures_after(calls: list[Call], t: float) -> list[Call]:
    return [c for c in calls if c.t >= t and c.status != "OK"]
