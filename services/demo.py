"""The demo: a two-site mesh on one machine, a load, a scripted story, a summary.

Does I/O (processes, files, gRPC, HTTP). `python -m services.demo --duration S
[--no-dashboard] [--direct]` starts the embedded DNS registry, both sites' services
(see demo_plan.py), a sidecar beside each, then one load generator per site aimed at
that site's access point; plays the story (demo_plan.story) and prints a table per
phase and site. `--direct` runs without registry and sidecars (each app calls the
first instance of its peers in its own site): the orchestration works the same, the
faults are simply not hidden. It is how the demo is tested while `sidecar run` and
`sidecar registry` are still being built.

A failed start (a process that exits or never gets ready) stops everything, keeps
the working folder (a temporary one too), and prints where it is, the failing
process's command line and the last lines of its log.

No orphans: every child runs in its own process group (so a terminal's Ctrl-C reaches
only us and we stop children in order) and gets PR_SET_PDEATHSIG, so even a SIGKILLed
demo takes its children with it. SIGINT/SIGTERM stop the story, then every group is
sent SIGTERM, and SIGKILL after a grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no fork() notices from grpc's core

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services import demo_plan, demo_prometheus
from services.demo_plan import Instance, Phase, Plan
from services.demo_tls import DemoPki
from services.demo_view import MeshView, render_rows
from services.knobs import set_knobs
from services.ports import free_port, free_ports

# The folder `services` was imported from (a source tree, or site-packages): the
# children run the same code as the demo, wherever it is started from.
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "demo-token"
DEMO_ID_ENV = "SIDECAR_DEMO_ID"
BURST = "burst-lon3"
TAIL_LINES = 20  # of a failing process's log, printed when the demo fails to start
log = logging.getLogger("services.demo")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process
    log_path: Path


class StartFailed(RuntimeError):
    """A process of the mesh exited, or was not ready in time, while the demo started."""

    def __init__(self, child: Child, reason: str) -> None:
        super().__init__(reason)
        self.child = child


@dataclass
class Supervisor:
    workdir: Path
    demo_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    children: dict[str, Child] = field(default_factory=dict)

    async def spawn(self, name: str, argv: list[str]) -> Child:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONUNBUFFERED": "1",
            DEMO_ID_ENV: self.demo_id,  # lets a test find any child that outlived us
        }
        out = await asyncio.to_thread(open, log_path, "ab")
        with out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.workdir,  # nothing depends on where the demo was started
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, argv, proc, log_path)
        self.children[name] = child
        return child

    async def stop(self, name: str, sig: int = signal.SIGTERM, grace_s: float = 3.0) -> None:
        child = self.children.pop(name, None)
        if child is None or child.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, sig)
        try:
            await asyncio.wait_for(child.proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            await child.proc.wait()

    async def stop_all(self, grace_s: float = 2.0) -> None:
        """Load first, then every service and sidecar at once, the registry last.

        In parallel: at the end of the demo nobody calls anymore, so a sidecar need not
        linger for its callers (it gets SIGKILL after `grace_s`)."""
        names = list(self.children)
        waves = [
            [n for n in names if n.startswith("loadgen")],
            [n for n in names if not n.startswith("loadgen") and n != "registry"],
            [n for n in names if n == "registry"],
        ]
        for wave in waves:
            await asyncio.gather(*(self.stop(n, grace_s=grace_s) for n in wave))

    def tail(self, name: str, lines: int = TAIL_LINES) -> str:
        child = self.children.get(name)
        path = child.log_path if child else self.workdir / "logs" / f"{name}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def wait_healthy(address: str, deadline_s: float, child: Child) -> None:
    end = time.monotonic() + deadline_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if child.proc.returncode is not None:
                raise StartFailed(child, f"{child.name} exited with {child.proc.returncode}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > end:
                raise StartFailed(child, f"{child.name} not healthy on {address} in {deadline_s} s")
            await asyncio.sleep(0.1)


async def wait_admin_ready(port: int, deadline_s: float, child: Child) -> None:
    import aiohttp

    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as http:
        while True:
            if child.proc.returncode is not None:
                raise StartFailed(child, f"{child.name} exited with {child.proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            if time.monotonic() > end:
                raise StartFailed(
                    child, f"{child.name} not ready (admin :{port}) in {deadline_s} s"
                )
            await asyncio.sleep(0.1)


async def wait_dns_ready(port: int, deadline_s: float, child: Child) -> None:
    """Until the registry answers a query for its zone (any answer: it is serving)."""
    import dns.asyncquery
    import dns.exception
    import dns.message

    end = time.monotonic() + deadline_s
    query = dns.message.make_query(demo_plan.DOMAIN, "SOA")
    while True:
        if child.proc.returncode is not None:
            raise StartFailed(child, f"{child.name} exited with {child.proc.returncode}")
        with contextlib.suppress(dns.exception.DNSException, OSError):
            await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=0.5)
            return
        if time.monotonic() > end:
            raise StartFailed(
                child, f"{child.name} not answering on 127.0.0.1:{port} in {deadline_s} s"
            )
        await asyncio.sleep(0.1)


async def together(*aws: Any) -> None:
    """Await all; on the first failure cancel the rest (no wait left behind) and raise it."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Demo:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sup = Supervisor(workdir)
        self.plan: Plan = demo_plan.make_plan(free_ports(), args.instances, args.registry_port)
        # mTLS between the sidecars, with short-lived certificates re-issued while running
        self.pki: DemoPki | None = None
        if not args.direct and not args.no_mtls:
            self.pki = DemoPki(workdir / "tls", demo_plan.DOMAIN)
            self.pki.configure(self.plan.instances)
        self.phases = demo_plan.story(args.duration)
        # Load results per source: one loadgen per site, plus the overload burst.
        self.sources = (*demo_plan.SITES, BURST)
        self.lines: dict[str, list[dict[str, Any]]] = {src: [] for src in self.sources}
        self.offsets_s: dict[str, float] = {src: 0.0 for src in self.sources}
        self.view = MeshView(self.plan.instances)
        self._restoring: asyncio.Future[Any] | None = None
        self.summaries: dict[str, dict[str, Any]] = {}
        self.phase: Phase = self.phases[0]
        self.events: list[str] = []
        self.prometheus_url: str | None = None

    # --- starting -------------------------------------------------------------------
    def _app_argv(self, inst: Instance) -> list[str]:
        a = self.args
        argv = [sys.executable, "-m", f"services.{inst.service}", "--port", str(inst.app_port),
                "--name", inst.name, "--grace", "0.5", "--log-level", "WARNING"]  # fmt: skip
        if inst.is_data:
            db = self.workdir / inst.site / f"{inst.service}.db"
            db.parent.mkdir(exist_ok=True)
            argv += ["--db", str(db), "--tracks", str(a.tracks), "--playlists", str(a.playlists)]
            return argv
        if not a.direct and inst.inprocess:
            path = self._write_sidecar_config(inst)
            return [*argv, "--client", "inprocess", "--sidecar-config", str(path),
                    *self._extra(inst)]  # fmt: skip
        if not a.direct:
            return [*argv, "--outbound", f"127.0.0.1:{inst.outbound_port}", *self._extra(inst)]
        for peer in demo_plan.PEERS[inst.service]:
            first = self.plan.by_service(peer, inst.site)[0]
            argv += [f"--{peer}", f"127.0.0.1:{first.app_port}"]
        return [*argv, *self._extra(inst)]

    def _extra(self, inst: Instance) -> list[str]:
        if inst.service == "accesspoint":
            return ["--tokens", str(self.workdir / "tokens.txt")]
        return []

    async def _start_app(self, inst: Instance) -> None:
        child = await self.sup.spawn(inst.name, self._app_argv(inst))
        await wait_healthy(f"127.0.0.1:{inst.app_port}", 60.0, child)

    async def _stop_instance(self, inst: Instance) -> None:
        """SIGTERM the sidecar first (it deregisters, serves while callers let go, closes),
        then the app: the order that loses no call."""
        if not self.args.direct:
            grace = demo_plan.LINGER_S + 4.0
            await self.sup.stop(f"sidecar-{inst.name}", signal.SIGTERM, grace_s=grace)
        await self.sup.stop(inst.name)

    async def _restore(self, inst: Instance) -> None:
        if inst.name not in self.sup.children:
            await self._start_app(inst)
        if not self.args.direct and f"sidecar-{inst.name}" not in self.sup.children:
            await self._start_sidecar(inst)

    def _write_sidecar_config(self, inst: Instance) -> Path:
        path = self.workdir / "sidecars" / f"{inst.name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(inst.sidecar, sort_keys=False))
        return path

    async def _start_sidecar(self, inst: Instance) -> None:
        path = self._write_sidecar_config(inst)
        child = await self.sup.spawn(
            f"sidecar-{inst.name}", [sys.executable, "-m", "sidecar", "run", "-c", str(path)]
        )
        await wait_admin_ready(inst.admin_port, 20.0, child)

    async def start(self) -> None:
        (self.workdir / "tokens.txt").write_text(f"{TOKEN} demo-user\n")
        demo_plan.validate(self.plan)
        if not self.args.direct:
            reg = await self.sup.spawn(
                "registry",
                [sys.executable, "-m", "sidecar", "registry", "--listen",
                 f"127.0.0.1:{self.plan.registry_port}", "--zone", demo_plan.DOMAIN],
            )  # fmt: skip
            await wait_dns_ready(self.plan.registry_port, 30.0, reg)
        # The first instance of each data service seeds its site's file; the rest find it seeded.
        firsts = [i for i in self.plan.instances if i.is_data and i.index == 0]
        await together(*(self._start_app(i) for i in firsts))
        rest = [i for i in self.plan.instances if i.is_data and i.index > 0]
        await together(*(self._start_app(i) for i in rest))
        if not self.args.direct:
            await together(*(self._start_sidecar(i) for i in self.plan.instances if i.is_data))
        for service in ("playlistview", "accesspoint"):
            insts = self.plan.by_service(service)
            await together(*(self._start_app(i) for i in insts))
            if not self.args.direct:
                await together(*(self._start_sidecar(i) for i in insts))

    async def start_prometheus(self) -> str:
        """A Prometheus scraping every sidecar (file-based discovery), when installed:
        what to tell the user (its URL, or how to get one)."""
        exe = demo_prometheus.binary()
        if exe is None:
            return (f"no Prometheus here (apt-get install {demo_prometheus.PACKAGE} to have the "
                    "demo start one scraping every sidecar)")  # fmt: skip
        workdir = self.workdir / "prometheus"
        # every 5 s: the terminal view polls the same /metrics every `poll_s` already, and on
        # a small machine sixteen sidecars' scrapes are CPU the mesh needs
        config = demo_prometheus.write_config(workdir, self.plan.instances, scrape_s=5.0)
        port = free_port()
        child = await self.sup.spawn("prometheus", demo_prometheus.argv(exe, config, workdir, port))
        await asyncio.sleep(0.5)
        if child.proc.returncode is not None:
            return f"Prometheus exited at start: {self.sup.tail('prometheus')}"
        self.prometheus_url = f"http://127.0.0.1:{port}/"
        return (f"Prometheus: {self.prometheus_url} scrapes the {len(self.plan.instances)} "
                f"sidecars listed in {config.parent / 'sidecars.json'} (alerts: "
                f"{demo_prometheus.ALERTS.relative_to(ROOT)})")  # fmt: skip

    def entry(self, site: str) -> str:
        ap = self.plan.by_service("accesspoint", site)[0]
        port = ap.app_port if self.args.direct else ap.inbound_port
        return f"127.0.0.1:{port}"

    async def _loadgen(self, name: str, site: str, rate: float, duration: float) -> Child:
        out = self.workdir / f"{name}.jsonl"
        return await self.sup.spawn(
            name,
            [sys.executable, "-m", "services.loadgen", "--target", self.entry(site),
             "--rate", str(rate), "--duration", str(duration), "--token", TOKEN,
             "--playlists", str(self.args.playlists), "--out", str(out)],
        )  # fmt: skip

    # --- the story --------------------------------------------------------------------
    def _app(self, service: str, site: str, index: int) -> Instance:
        return self.plan.by_service(service, site)[index]

    async def _act(self, phase: Phase) -> None:
        self.events.append(f"{phase.start_s:5.1f}s {phase.name}: {phase.story}")
        if phase.name == "kill-metadata":
            await self.sup.stop(self._app("metadata", "lon3", 0).name, signal.SIGKILL)
        elif phase.name == "slow-playlist":
            await set_knobs(f"127.0.0.1:{self._app('playlist', 'lon3', 0).app_port}",
                            latency_ms=250.0, jitter_ms=50.0)  # fmt: skip
        elif phase.name == "lon3-playlist-down":
            await asyncio.gather(
                *(self._stop_instance(i) for i in self.plan.by_service("playlist", "lon3"))
            )
        elif phase.name == "restored":
            # In the background: starting processes takes seconds; the story keeps time.
            self._restoring = asyncio.ensure_future(
                asyncio.gather(*(self._restore(i) for i in self.plan.instances))
            )
        elif phase.name == "overload":
            burst = self.args.rate * self.args.burst_factor
            self.offsets_s[BURST] = phase.start_s
            await self._loadgen(f"loadgen-{BURST}", "lon3", burst, phase.end_s - phase.start_s)

    async def run_story(self, t0: float) -> None:
        for phase in self.phases:
            await asyncio.sleep(max(0.0, t0 + phase.start_s - time.monotonic()))
            self.phase = phase
            try:
                await self._act(phase)
            except Exception as exc:  # a failed step is reported, the story goes on
                self.events.append(f"  step {phase.name} failed: {exc}")

    def poll_lines(self, offsets: dict[str, int]) -> None:
        for src in self.sources:
            path = self.workdir / f"loadgen-{src}.jsonl"
            with contextlib.suppress(OSError), open(path) as f:
                f.seek(offsets.get(src, 0))
                while True:
                    line = f.readline()
                    if not line.endswith("\n"):
                        break
                    offsets[src] = f.tell()
                    record = json.loads(line)
                    if record.get("summary"):
                        self.summaries[src] = record
                    else:  # seconds on the demo's clock (the burst starts later)
                        record["second"] += self.offsets_s[src]
                        self.lines[src].append(record)

    # --- the summary ------------------------------------------------------------------
    def phase_rows(self) -> list[dict[str, Any]]:
        rows = []
        for phase in self.phases:
            for site in self.sources:
                secs = [s for s in self.lines[site] if phase.start_s <= s["second"] < phase.end_s]
                if site == BURST and not secs:
                    continue
                count = sum(s["count"] for s in secs)
                ok = sum(s["ok"] for s in secs)
                errors: dict[str, int] = {}
                for s in secs:
                    for k, v in {**s["sidecar_errors"], **s["causes"]}.items():
                        errors[k] = errors.get(k, 0) + v
                rows.append(
                    {
                        "phase": phase.name,
                        "site": site,
                        "count": count,
                        "ok": ok,
                        "success_ratio": round(ok / count, 4) if count else None,
                        "worst_p99_ms": max((s["p99_ms"] for s in secs), default=0.0),
                        "metadata_missing": sum(s["metadata_missing"] for s in secs),
                        "errors": errors,
                    }
                )
        return rows

    def walk(self) -> dict[str, dict[str, int]]:
        """Per site and service: calls its instances' inbound sidecars served (the walk)."""
        out: dict[str, dict[str, int]] = {site: {} for site in demo_plan.SITES}
        for t in self.view.totals():
            out[t["site"]][t["service"]] = out[t["site"]].get(t["service"], 0) + t["requests"]
        return out


def render(demo: Demo, final: bool = False) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    mode = "direct (no sidecars)" if demo.args.direct else "sidecars"
    table = Table(title=f"phase: {demo.phase.name} - {demo.phase.story}  [{mode}]")
    for col in ("site", "sec", "req/s", "ok %", "p50 ms", "p99 ms", "md missing", "errors"):
        table.add_column(col)
    for site in demo_plan.SITES:
        if demo.lines[site]:
            s = demo.lines[site][-1]
            ok = f"{100 * s['ok'] / s['count']:.1f}" if s["count"] else "-"
            errs = ", ".join(f"{k}={v}" for k, v in {**s["sidecar_errors"], **s["causes"]}.items())
            table.add_row(site, str(s["second"]), str(s["count"]), ok, str(s["p50_ms"]),
                          str(s["p99_ms"]), str(s["metadata_missing"]), errs[:60])  # fmt: skip
    events = Text("\n".join(demo.events[-8:]))
    if demo.args.direct:
        return Group(table, events)
    return Group(table, render_rows(demo.view), events)


def summary_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="summary per phase and site (p99: worst second)")
    for col in ("phase", "site", "requests", "ok", "success", "p99 ms", "md missing", "errors"):
        table.add_column(col)
    for r in rows:
        ratio = "-" if r["success_ratio"] is None else f"{100 * r['success_ratio']:.1f}%"
        errs = ", ".join(f"{k}={v}" for k, v in sorted(r["errors"].items()))
        table.add_row(r["phase"], r["site"], str(r["count"]), str(r["ok"]), ratio,
                      str(r["worst_p99_ms"]), str(r["metadata_missing"]), errs[:70])  # fmt: skip
    return table


def instances_table(totals: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title="per instance, as its inbound sidecar counted (whole run)")
    for col in ("instance", "requests", "errors", "drops", "breaker trips (by callers)"):
        table.add_column(col)
    for t in totals:
        table.add_row(t["instance"], str(t["requests"]), str(t["errors"]), str(t["drops"]),
                      str(t["breaker_trips"]))  # fmt: skip
    return table


async def run(args: argparse.Namespace, workdir: Path, out: IO[str]) -> int:
    from rich.console import Console
    from rich.live import Live

    tty = out.isatty()
    console = Console(
        file=out, force_terminal=tty and not args.no_dashboard, width=None if tty else 120
    )
    demo = Demo(args, workdir)
    if args.demo_id:
        demo.sup.demo_id = args.demo_id
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    # the certificates are re-issued from the start: they live a minute, starting takes long
    rotating = asyncio.create_task(demo.pki.rotate(demo.plan.instances)) if demo.pki else None
    try:
        registry = "" if args.direct else f", DNS registry on 127.0.0.1:{demo.plan.registry_port}"
        console.print(f"starting {len(demo.plan.instances)} services in {workdir}{registry} ...")
        starting = asyncio.create_task(demo.start())
        await asyncio.wait([starting, asyncio.create_task(stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if stop.is_set():
            starting.cancel()
            return 130
        starting.result()
        if not args.direct and not args.no_prometheus:
            console.print(await demo.start_prometheus())
        t0 = time.monotonic()
        gens = [await demo._loadgen(f"loadgen-{s}", s, args.rate, args.duration)
                for s in demo_plan.SITES]  # fmt: skip
        story = asyncio.create_task(demo.run_story(t0))
        offsets: dict[str, int] = {}
        live = (
            Live(render(demo), console=console, refresh_per_second=2)
            if not args.no_dashboard
            else None
        )
        with live or contextlib.nullcontext():
            last_phase = ""
            next_view = 0.0
            while not stop.is_set() and any(g.proc.returncode is None for g in gens):
                await asyncio.sleep(0.5)
                demo.poll_lines(offsets)
                if not args.direct and time.monotonic() >= next_view:
                    next_view = time.monotonic() + args.poll_s
                    await demo.view.poll()
                if live:
                    live.update(render(demo))
                elif demo.phase.name != last_phase:
                    last_phase = demo.phase.name
                    print(f"[{time.monotonic() - t0:5.1f}s] {demo.phase.name}: "
                          f"{demo.phase.story}", file=sys.stderr)  # fmt: skip
        story.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await story
        if rotating is not None and demo.pki is not None:
            rotating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rotating
            demo.events.append(demo.pki.summary())
        if demo._restoring is not None and not demo._restoring.done():
            demo.events.append("  restore still starting processes at the end of the run")
            demo._restoring.cancel()
        if demo._restoring is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await demo._restoring
        if stop.is_set():
            code = 130
        demo.poll_lines(offsets)
        if not args.direct:
            await demo.view.poll()
        rows = demo.phase_rows()
        console.print(summary_table(rows))
        if not args.direct:
            console.print(instances_table(demo.view.totals()))
        inprocess = [] if args.direct else [i.name for i in demo.plan.instances if i.inprocess]
        if inprocess:
            console.print(f"calling peers in-process (sidecar.client): {', '.join(inprocess)}; "
                          "every other app through its sidecar's outbound listener")  # fmt: skip
        for e in demo.events:
            console.print(e)
        result = {"mode": "direct" if args.direct else "sidecars", "phases": rows,
                  "inprocess": inprocess,
                  "loadgen": demo.summaries, "events": demo.events,
                  "instances": demo.view.totals(), "walk": demo.walk(),
                  "prometheus": demo.prometheus_url,
                  "mtls": None if demo.pki is None else {
                      "issued": demo.pki.issued, "rounds": demo.pki.rounds}}  # fmt: skip
        if args.summary_out:
            text = json.dumps(result, indent=1)
            await asyncio.to_thread(Path(args.summary_out).write_text, text)
    except StartFailed as exc:
        report_failed_start(exc, demo.sup, out)
        code = 2
    except RuntimeError as exc:
        console.print(f"demo failed to start: {exc}")
        code = 2
    finally:
        if rotating is not None:
            rotating.cancel()
        await demo.sup.stop_all()
    if code == 2:
        print(f"kept the working folder (configs, databases, logs): {workdir}", file=out)
    return code


def report_failed_start(exc: StartFailed, sup: Supervisor, out: IO[str]) -> None:
    """What failed, how it was started and what it said, so the cause shows at once.
    Plain print, not rich: a log line's brackets are not markup."""
    child = exc.child
    lines = [f"demo failed to start: {exc}", f"  command: {shlex.join(child.argv)}"]
    tail = sup.tail(child.name)
    if tail:
        lines.append(f"  last lines of {child.log_path}:")
        lines += [f"    {line}" for line in tail.splitlines()]
    else:
        lines.append(f"  {child.log_path} is empty")
    print("\n".join(lines), file=out, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="services.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=75.0, help="seconds of load")
    parser.add_argument("--no-dashboard", action="store_true", help="plain log lines (CI)")
    parser.add_argument("--direct", action="store_true", help="no registry and no sidecars")
    parser.add_argument("--rate", type=float, default=15.0, help="requests/s per site")
    parser.add_argument("--burst-factor", type=float, default=4.0, help="overload burst x rate")
    parser.add_argument("--instances", type=int, default=2, help="per data service and site")
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--playlists", type=int, default=5_000)
    parser.add_argument("--workdir", help="keep databases, configs and logs here")
    parser.add_argument("--summary-out", help="write the summary as JSON here")
    parser.add_argument("--poll-s", type=float, default=2.0, help="sidecar admin poll period")
    parser.add_argument(
        "--registry-port",
        type=int,
        help="the DNS registry's port on 127.0.0.1 (default: a free one)",
    )
    parser.add_argument("--no-mtls", action="store_true",
                        help="plaintext between the sidecars (no certificates)")  # fmt: skip
    parser.add_argument("--no-prometheus", action="store_true",
                        help="do not start a Prometheus even when one is installed")  # fmt: skip
    parser.add_argument("--demo-id", help=f"value of {DEMO_ID_ENV} in every child (tests)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(args, Path(args.workdir), sys.stdout))
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-demo-"))
    code = 2
    try:
        code = asyncio.run(run(args, tmp, sys.stdout))
    finally:
        if code in (0, 130):  # a failed run keeps its logs (run() says where)
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
