"""What the chaos scenarios share: the upstream config a caller uses, building the usual
topology, running load with pollers, and writing the results.

Does I/O (through the harness).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.chaos import checks, timeline
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


def check_traffic_moved(
    sc: Scenario,
    folder: Path,
    summary: dict[str, Any],
    victim: Instance,
    within_s: float,
    **more: Any,
) -> float:
    """After a fault on `victim` (the scenario's first mark): record when the caller
    marked it unhealthy and stopped sending to it, and its share before, with `more`;
    check that every failure is explained and that traffic moved within `within_s`.
    Returns the fault's time."""
    calls, t = sc.loop.calls, sc.events[0][0]
    samples = sc.pollers["clusters"].samples
    eject = timeline.eject_time(samples, "echo", victim.address, t)
    moved = timeline.moved_time(samples, "echo", victim.address, t)
    update_summary(
        folder,
        summary,
        victim=victim.name,
        victim_share_before=round(timeline.share(calls, victim.name, t - 2.0, t), 4),
        eject_s=eject,
        moved_s=moved,
        **more,
    )
    checks.clear_failures(calls, folder)
    assert moved is not None and moved <= within_s, (
        f"traffic still sent to {victim.name} {moved}s after the fault (marked unhealthy "
        f"after {eject}s; see {folder})"
    )
    return t


def failures_after(calls: list[Call], t: float) -> list[Call]:
    return [c for c in calls if c.t >= t and c.status != "OK"]


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness step (start a process, restart BIND) without stalling the load."""
    import asyncio

    return await asyncio.to_thread(fn, *args, **kwargs)


def endpoint_counts(samples: list[tuple[float, Any]], upstream: str) -> list[tuple[float, float]]:
    """(t, number of endpoints the caller knows) per /clusters sample."""
    return [(t, float(len((d.get(upstream) or {}).get("endpoints", [])))) for t, d in samples]


async def dns_outage(mesh: Mesh, name: str, outage_s: float) -> None:
    """BIND killed for `outage_s` under load, then restarted; an instance added meanwhile.

    Expects: no failed call while DNS is down (callers keep the last good endpoints),
    the caller never forgets an endpoint, and once DNS is back the new instance's
    registration catches up and the caller discovers it within 10 s."""
    import asyncio

    _, caller = echo_topology(mesh, {"a": 3})
    down_at = 2.0
    added: list[Instance] = []
    up_at = down_at + outage_s
    caught_up: list[float] = []

    async def script(sc: Scenario) -> None:
        await sc.at(down_at)
        await in_thread(mesh.dns.stop)
        sc.mark("DNS killed")
        await sc.at(down_at + min(2.0, outage_s / 3))
        added.append(await in_thread(mesh.add_instance, "a"))
        sc.mark(f"{added[0].name} started")
        await sc.at(up_at)
        await in_thread(mesh.dns.start)
        t_up = sc.mark("DNS back")
        while sc.loop.now() < t_up + 10.0:
            if len(caller.endpoints("echo")) == 4:
                caught_up.append(sc.mark("caller knows the new instance") - t_up)
                break
            await asyncio.sleep(0.2)

    sc, folder, summary = await run_load(
        name, caller, script, rate=50, duration=up_at + 8.0, deadline=1.0
    )
    calls = sc.loop.calls
    t_down = sc.events[0][0]
    t_up = next(t for t, e in sc.events if e == "DNS back")
    counts = endpoint_counts(sc.pollers["clusters"].samples, "echo")
    forgot = [(round(t, 2), n) for t, n in counts if t_down <= t <= t_up + 1.0 and n < 3]
    during = [c for c in calls if t_down <= c.t < t_up and c.status != "OK"]
    update_summary(
        folder,
        summary,
        failures_during_outage=len(during),
        catch_up_s=caught_up[0] if caught_up else None,
        endpoints_forgotten=forgot[:5],
    )
    checks.clear_failures(calls, folder)
    assert not during, f"{len(during)} calls failed while DNS was down, e.g. {during[0]} ({folder})"
    assert not forgot, f"the caller forgot endpoints while DNS was down: {forgot[:5]} ({folder})"
    assert summary["success_ratio"] >= 0.999, f"success {summary['success_ratio']} ({folder})"
    assert caught_up, (
        f"the instance started during the outage was not discovered within 10 s of DNS "
        f"returning; DNS holds {mesh.dns.srv_set(mesh.srv_name('echo', 'a'))} ({folder})"
    )


async def busiest(caller: SidecarProc, upstream: str, instances: list[Instance]) -> Instance:
    """The instance that got the most attempts from `caller` over the last half second.

    Faults hit this one: a peak-EWMA balancer may have left some instance nearly idle,
    and a fault on an idle instance would show nothing."""
    import asyncio

    def counts() -> dict[str, int]:
        return {e["address"]: int(e["requests"]) for e in caller.endpoints(upstream)}

    first = await in_thread(counts)
    await asyncio.sleep(0.5)
    second = await in_thread(counts)
    return max(instances, key=lambda i: second.get(i.address, 0) - first.get(i.address, 0))
