"""`sidecar chaos run SCENARIO.yaml`: start the topology, load it, inject the faults at
their times, measure, report, and take everything down.

Does I/O (through topology.py, load.py and report.py). The order of one run, and why:

1. Validate the scenario (spec.py) and every sidecar config (as `sidecar check` does)
   before starting anything: a typo costs no minute of waiting.
2. Start the registry, then every instance (all at once: sidecars whose app calls a
   peer are ready only when that peer is registered), then the caller, and wait until
   the caller knows every instance of the loaded service: the steady phase must
   measure the whole topology, not its start-up.
3. Run the load with a poller of the caller's /clusters (what "traffic moved" and the
   PNG's per-endpoint lines read) and the fault script; an abort watcher (Netflix
   ChAP's rule) stops injecting and undoes the faults in force when the success ratio
   over the last `abort.window_s` falls below `abort.success_below`.
4. Always, in `finally`: undo faults, kill every process of the run (its marker finds
   an app's strays too), then check nothing survived.
5. Evaluate the expectations per phase (measure.py, pure), write the results, exit 0
   only when every expectation held.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.chaos import measure, report
from sidecar.chaos.load import LoadLoop, Poller, request_bytes
from sidecar.chaos.measure import Evidence, Verdict
from sidecar.chaos.procs import leaked
from sidecar.chaos.spec import TARGETED, Fault, Scenario, ScenarioError, load_scenario
from sidecar.chaos.topology import Instance, StartFailed, Topology


@dataclass
class Outcome:
    verdicts: list[Verdict]
    summary: dict[str, Any]
    folder: Path
    text: str
    aborted: str | None = None

    @property
    def passed(self) -> bool:
        return all(v.held for v in self.verdicts)


@dataclass
class _Run:
    scenario: Scenario
    topo: Topology
    loop: LoadLoop
    events: list[tuple[float, str]] = field(default_factory=list)
    injected: list[tuple[int, float, str]] = field(default_factory=list)
    evidence: Evidence = field(default_factory=Evidence)
    undo: list[tuple[str, Any]] = field(default_factory=list)  # (label, async callable)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    aborted: str | None = None
    notes: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # namespaces or links not removed

    def mark(self, label: str) -> float:
        t = self.loop.now()
        self.events.append((t, label))
        return t

    async def at(self, t: float) -> None:
        await self.loop.started()
        delay = t - self.loop.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def target(self, fault: Fault) -> Instance:
        service = self.scenario.service_of(fault)
        if fault.target == "busiest":
            return await self.topo.busiest(service)
        return self.topo.find(fault.target)

    def later(self, fault: Fault, label: str, action: Any) -> None:
        """Undo `action` after the fault's duration (or at the end of the run)."""
        entry = (label, action)
        self.undo.append(entry)
        if fault.duration_s is None:
            return

        async def undo_after(duration: float) -> None:
            await asyncio.sleep(duration)
            if entry in self.undo:
                self.undo.remove(entry)
                await action()
                self.mark(label)

        self.background.append(asyncio.create_task(undo_after(fault.duration_s)))

    async def undo_all(self) -> None:
        while self.undo:
            label, action = self.undo.pop()
            with contextlib.suppress(Exception):
                await action()
                self.mark(label)

    async def inject(self, i: int, fault: Fault) -> None:
        topo = self.topo
        action = fault.action
        service = self.scenario.service_of(fault)
        site = fault.site or next(iter(self.scenario.services[service].sites))
        inst = await self.target(fault) if action in TARGETED and action != "scale_in" else None
        if inst is not None:
            self.evidence.victims[i] = inst.address
            self.evidence.victim_names[i] = inst.name
        label = f"{action} {inst.name}" if inst else action
        if action == "kill":
            assert inst is not None
            topo.kill(inst)
        elif action == "partition" and inst is not None and inst.ns is not None:
            # iptables in its namespace: a child process, off the event loop (the load's)
            await asyncio.to_thread(topo.partition, inst)
            victim = inst

            async def heal() -> None:
                await asyncio.to_thread(topo.heal, victim)

            self.later(fault, f"{victim.name} healed", heal)
        elif action in ("stop", "partition"):
            assert inst is not None
            # without network namespaces a partition is the instance's sidecar frozen:
            # its connections stay open and nothing answers, as behind a dropped route
            topo.freeze(inst, sidecar_only=action == "partition")
            victim = inst

            async def thaw() -> None:
                topo.thaw(victim)

            self.later(fault, f"{victim.name} resumed", thaw)
        elif action in ("latency", "abort"):
            assert inst is not None
            body = (
                {"delay": {"percent": fault.percent, "ms": fault.ms}}
                if action == "latency"
                else {"abort": {"percent": fault.percent, "status": fault.status}}
            )
            await topo.set_fault(inst, body)
            victim = inst

            async def clear() -> None:
                await topo.clear_fault(victim)

            self.later(fault, f"{victim.name} {action} cleared", clear)
        elif action == "dns_down":
            topo.stop_registry()

            async def back() -> None:
                await topo.start_registry()

            self.later(fault, "DNS back", back)
        elif action == "site_down":
            for victim in [i for i in topo.instances if i.site == site and i.state == "up"]:
                topo.kill(victim)
            label = f"site {site} down"
        elif action == "scale_out":
            # off the event loop: a namespace for each is made with `ip` commands
            added = [
                await asyncio.to_thread(topo.add_instance, service, site)
                for _ in range(fault.count)
            ]
            self.evidence.added[i] = [a.address for a in added]
            label = f"scale out: {', '.join(a.name for a in added)}"

            async def ready() -> None:  # in the background: later faults keep their times
                names = ", ".join(a.name for a in added)
                try:
                    await asyncio.gather(*(topo.wait_ready(a) for a in added))
                except StartFailed as exc:
                    self.mark(f"{names} did not start: {str(exc).splitlines()[0]}")
                else:
                    self.mark(f"{names} ready")

            self.background.append(asyncio.create_task(ready()))
        elif action == "scale_in":
            victim = await self.target(fault)
            self.evidence.victims[i] = victim.address
            self.evidence.victim_names[i] = victim.name
            self.background.append(asyncio.create_task(topo.scale_in(victim)))
            label = f"scale in {victim.name} (drain)"
        self.injected.append((i, self.mark(label), label))

    async def script(self) -> None:
        for i, fault in enumerate(self.scenario.faults):
            await self.at(fault.at_s)
            if self.aborted:
                return
            await self.inject(i, fault)

    async def watch(self) -> None:
        """The abort rule: once a fault is in, success below the floor stops injection."""
        rule = self.scenario.abort
        while not self.loop.stopped:
            await asyncio.sleep(0.25)
            if self.aborted or not self.injected:
                continue
            now = self.loop.now()
            done = [c for c in self.loop.calls if c.latency > 0 and c.t >= now - rule.window_s]
            if len(done) < 10:
                continue
            ratio = measure.success_ratio(done)
            if ratio < rule.success_below:
                self.aborted = (
                    f"success {ratio:.3f} over the last {rule.window_s}s fell below "
                    f"{rule.success_below}: injection stopped, faults in force undone"
                )
                self.mark("ABORT: " + self.aborted.partition(":")[0])
                await self.undo_all()


def _say(line: str) -> None:
    print(f"sidecar chaos: {line}", flush=True)


async def run_scenario(
    scenario: Scenario, base: Path, folder: Path, junit_path: Path | None = None
) -> Outcome:
    run_id = f"{os.getpid()}-{time.time_ns()}"
    topo = Topology(scenario, base, folder, run_id)
    started = time.monotonic()
    run: _Run | None = None
    notes: list[str] = []
    left: list[str] = []
    try:
        request = request_bytes(scenario, base)
        notes += _namespaces(scenario, topo)
        await topo.start_registry()
        await topo.start_instances()
        _say(f"{len(topo.instances)} instances up: " + ", ".join(i.name for i in topo.instances))
        await topo.start_caller()
        loop = LoadLoop(f"127.0.0.1:{topo.caller_outbound}", scenario.load, request,
                        scenario.load.service)  # fmt: skip
        run = _Run(scenario, topo, loop)
        run.evidence.upstream = scenario.load.service
        poller = Poller(topo.caller_url("/clusters"), loop.now)
        run.evidence.samples = poller.samples
        stop = asyncio.Event()
        load = asyncio.create_task(loop.run())
        await loop.started()
        _say(f"load started ({scenario.load.duration_s}s)")
        helpers = [asyncio.create_task(poller.run(stop)), asyncio.create_task(run.watch())]
        try:
            await run.script()
            await load
        finally:
            loop.stopped = True
            stop.set()
            await run.undo_all()
            for task in [*helpers, *run.background]:
                task.cancel()
            await asyncio.gather(load, *helpers, *run.background, return_exceptions=True)
    finally:
        left = topo.close()
    assert run is not None  # the topology started, or StartFailed was raised
    run.notes = notes
    run.left = left
    return _finish(scenario, topo, run, folder, junit_path, time.monotonic() - started)


def _namespaces(scenario: Scenario, topo: Topology) -> list[str]:
    """Open the network namespaces if the scenario wants them; notes for the console."""
    from sidecar.chaos import netns

    wanted = scenario.namespaces
    partitions = any(f.action == "partition" for f in scenario.faults)
    if wanted == "off" or (wanted == "auto" and not partitions):
        return []
    ok, why = netns.available()
    if ok:
        topo.open_network()
        return []
    if wanted == "on":
        raise ScenarioError("namespaces", f"on, but network namespaces cannot be used: {why}")
    return [f"no network namespaces ({why}): a partition freezes the instance's sidecar"]


def _finish(
    scenario: Scenario,
    topo: Topology,
    run: _Run,
    folder: Path,
    junit_path: Path | None,
    elapsed: float,
) -> Outcome:
    """Check that nothing survived, evaluate, write the results (blocking file I/O)."""
    loop = run.loop
    notes: list[str] = list(run.notes)
    survivors = leaked(topo.run_id)
    end = scenario.load.duration_s
    phase_list = measure.phases(scenario, run.injected, end)
    verdicts = measure.evaluate(scenario, loop.calls, phase_list, run.evidence)
    if run.aborted:
        verdicts.append(Verdict("run", "abort rule not triggered", False, run.aborted))
    if survivors or run.left:
        verdicts.append(
            Verdict("run", "nothing left running", False, "; ".join([*survivors, *run.left]))
        )
    rows = report.phase_rows(phase_list, loop.calls)
    summary = {
        "scenario": scenario.name,
        **measure.summarize(loop.calls),
        "phases": rows,
        "expectations": [v.to_json() for v in verdicts],
        "passed": all(v.held for v in verdicts),
        "aborted": run.aborted,
        "events": [{"t": round(t, 3), "event": e} for t, e in run.events],
        "instances": {i.name: i.address for i in topo.instances},
    }
    names = {i.address: i.name for i in topo.instances}
    notes += report.write(folder, scenario.name, loop.calls, run.evidence.samples,
                          scenario.load.service, run.events, summary, names)  # fmt: skip
    xml = report.junit(scenario.name, verdicts, elapsed)
    (folder / "junit.xml").write_bytes(xml)
    if junit_path is not None:
        junit_path.parent.mkdir(parents=True, exist_ok=True)
        junit_path.write_bytes(xml)
    if run.aborted:
        notes.append(f"aborted: {run.aborted}")
    text = report.console(scenario.name, rows, verdicts, notes)
    return Outcome(verdicts, summary, folder, text, run.aborted)


def run_main(path: str, junit: str | None = None, out: str | None = None) -> int:
    """The CLI verb: 0 when every expectation held, 1 when one did not, 2 when the
    scenario is refused or the topology did not start."""
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(f"sidecar chaos: {path}: {exc}", file=sys.stderr)
        return 2
    base = Path(path).resolve().parent
    folder = Path(out).resolve() if out else Path.cwd() / "chaos-results" / scenario.name
    junit_path = Path(junit).resolve() if junit else None

    async def main() -> Outcome:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_scenario(scenario, base, folder, junit_path)

    try:
        outcome = asyncio.run(main())
    except ScenarioError as exc:
        print(f"sidecar chaos: {path}: {exc}", file=sys.stderr)
        return 2
    except StartFailed as exc:
        print(f"sidecar chaos: the topology did not start: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:  # a fault that could not be injected, ...
        print(f"sidecar chaos: the run failed, everything it started is stopped: {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("sidecar chaos: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(outcome.text)
    print(f"sidecar chaos: results in {outcome.folder}")
    return 0 if outcome.passed else 1
