"""Running the cases side by side: set up every path, then alternate runs between them.

Does I/O. The order of a benchmark run:
1. Start each backend once, then every path in front of it (all stay up for the run,
   so runs can alternate without restarts; idle processes cost nothing).
2. Per case: a spot check with `nghttp -v` (gRPC success, response size), then a
   warm-up run whose numbers are thrown away (connection setup, Python imports,
   caches).
3. `repeats` rounds; each round runs every case at saturation, then every case at
   the fixed rate twice: as h2load's `--rps` sends it (bursts every 10 ms on 4
   connections) and paced (evenly spaced on one connection). The case order rotates
   each round so no case always runs first (or last) on a machine whose load drifts.
4. CPU and RSS of every proxy process and the backend are read from /proc right
   before and after each h2load run; CPU per request = delta / requests done.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.grpcwire import echo_request, grpc_frame
from bench.loadgen import H2loadResult, LoadError, run_h2load, spot_check, verify_grpc_ok
from bench.procs import Managed, StartFailed, Unavailable, cpu_seconds, rss_kib
from bench.targets import (
    REPO,
    require_tools,
    start_haproxy,
    start_haproxy_tls_pair,
    start_named,
    start_nginx,
    start_pyecho,
    start_sidecar_inbound,
    start_sidecar_outbound,
    start_sidecar_pair_mtls,
)

PATHS = (
    "direct",
    "haproxy",
    "haproxy-srv",
    "sidecar1",
    "sidecar2",
    "sidecar1-w2",
    "haproxy2-tls",
    "sidecar2-mtls",
)
TLS_PATHS = ("haproxy2-tls", "sidecar2-mtls")  # left out of a plain --smoke run
BACKENDS = ("nginx", "pyecho")


@dataclass
class Settings:
    repeats: int = 5
    sat_seconds: float = 5.0
    sat_clients: int = 8
    sat_streams: int = 16
    rate: int = 1000  # total req/s of the latency runs
    rate_clients: int = 4
    rate_seconds: float = 5.0
    warmup_seconds: float = 1.0
    payload_bytes: int = 100  # EchoRequest.payload; the gRPC body is 107 bytes
    smoke: bool = False
    smoke_requests: int = 300
    backends: tuple[str, ...] = BACKENDS
    only: tuple[str, ...] = ()
    tree: Path = REPO  # checkout whose `sidecar` and `services.echo` run
    # another checkout whose sidecars run beside this tree's, in the same rotation:
    # cases `sidecar1-base` and `sidecar2-base` (a change measured against its base)
    baseline: Path | None = None


@dataclass
class Run:
    """One measured h2load run of one case."""

    kind: str  # "saturation" | "rate" (h2load --rps: bursts) | "paced" (evenly spaced)
    repeat: int
    h2load: H2loadResult
    wall_s: float
    proxy_cpu_us: dict[str, float]  # per proxy process: CPU µs per request
    proxy_rss_kib: dict[str, int]  # per proxy process, right after the run
    proxy_util: float  # all proxy processes' CPU seconds / wall seconds
    backend_cpu_us: float  # backend CPU µs per request
    backend_util: float  # backend CPU seconds / wall seconds (1.0 = one core)
    loadgen_util: float  # h2load CPU seconds / wall seconds


@dataclass
class Case:
    path: str
    backend: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    port: int = 0
    proxies: list[Managed] = field(default_factory=list)
    backend_proc: Managed | None = None
    helpers: list[Managed] = field(default_factory=list)  # e.g. a DNS server; not measured
    response_data_bytes: int = 0
    runs: list[Run] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.path}/{self.backend}"

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason


def _selected(path: str, backend: str, only: tuple[str, ...]) -> bool:
    name = f"{path}/{backend}"
    return not only or any(o in name for o in only)


BASE_SUFFIX = "-base"


def _build(case: Case, backend_port: int, workdir: Path, tree: Path) -> None:
    """Start the proxies of one path in front of a running backend."""
    tag = case.name.replace("/", "-")
    path = case.path.removesuffix(BASE_SUFFIX)
    if case.path == "direct":
        case.port = backend_port
    elif case.path == "haproxy":
        proc, case.port = start_haproxy(workdir, f"haproxy-{case.backend}", backend_port)
        case.proxies.append(proc)
    elif case.path == "haproxy-srv":
        # named is discovery, not data plane: stopped with the case, not measured.
        named, dns_port = start_named(workdir, f"named-{case.backend}", backend_port)
        case.helpers.append(named)
        proc, case.port = start_haproxy(workdir, tag, backend_port, dns_port)
        case.proxies.append(proc)
    elif path == "sidecar1":
        proc, case.port = start_sidecar_outbound(workdir, f"{tag}-out", backend_port, tree)
        case.proxies.append(proc)
    elif case.path == "sidecar1-w2":
        proc, case.port = start_sidecar_outbound(
            workdir, f"{tag}-out", backend_port, tree, workers=2
        )
        case.proxies.append(proc)
    elif case.path == "haproxy2-tls":
        pair, case.port = start_haproxy_tls_pair(workdir, tag, backend_port)
        case.proxies.extend(pair)
    elif case.path == "sidecar2-mtls":
        pair, case.port = start_sidecar_pair_mtls(workdir, tag, backend_port, tree)
        case.proxies.extend(pair)
    elif path == "sidecar2":
        inbound, in_port = start_sidecar_inbound(workdir, f"{tag}-in", backend_port, tree)
        case.proxies.append(inbound)
        outbound, case.port = start_sidecar_outbound(workdir, f"{tag}-out", in_port, tree)
        case.proxies.insert(0, outbound)


def setup(settings: Settings, workdir: Path, log: Any) -> list[Case]:
    """Start what every selected case needs; a case that cannot start is skipped or failed."""
    cases: list[Case] = []

    def pyecho(wd: Path) -> tuple[Managed, int]:
        return start_pyecho(wd, settings.tree)

    starters = {"nginx": start_nginx, "pyecho": pyecho}
    for backend in settings.backends:
        paths = PATHS
        if settings.smoke and not settings.only:
            # the TLS pairs make a CA and two processes each: `--smoke --only tls` runs them
            paths = tuple(p for p in paths if p not in TLS_PATHS)
        if settings.baseline is not None:
            paths += ("sidecar1" + BASE_SUFFIX, "sidecar2" + BASE_SUFFIX)
        wanted = [Case(p, backend) for p in paths if _selected(p, backend, settings.only)]
        if not wanted:
            continue
        cases += wanted
        try:
            backend_proc, backend_port = starters[backend](workdir)
        except (Unavailable, StartFailed) as exc:
            status = "skipped" if isinstance(exc, Unavailable) else "failed"
            for c in wanted:
                c.fail(status, f"backend {backend}: {exc}")
            continue
        for case in wanted:
            case.backend_proc = backend_proc
            try:
                based = case.path.endswith(BASE_SUFFIX) and settings.baseline is not None
                tree = settings.baseline if based else settings.tree
                assert tree is not None
                _build(case, backend_port, workdir, tree)
            except Unavailable as exc:
                case.fail("skipped", str(exc))
            except StartFailed as exc:
                case.fail("failed", str(exc))
            log(f"  {case.name:18} {case.status} {case.reason}".rstrip())
    return cases


def _measure(
    case: Case, kind: str, repeat: int, settings: Settings, body: Path, workdir: Path
) -> Run:
    assert case.backend_proc is not None
    procs = {p.name: p for p in case.proxies}
    cpu0 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
    b0 = cpu_seconds(case.backend_proc.pid)
    t0 = time.monotonic()
    logf = workdir / "h2load.log"
    if settings.smoke:
        res = run_h2load(
            case.port,
            body,
            logf,
            clients=2,
            streams=8,
            requests=settings.smoke_requests,
            timeout_s=15,
        )
    elif kind == "saturation":
        res = run_h2load(
            case.port,
            body,
            logf,
            clients=settings.sat_clients,
            streams=settings.sat_streams,
            duration_s=settings.sat_seconds,
            timeout_s=settings.sat_seconds + 30,
        )
    elif kind == "rate":
        res = run_h2load(case.port, body, logf, clients=settings.rate_clients,
                         streams=settings.sat_streams, duration_s=settings.rate_seconds,
                         rps_per_client=max(1, settings.rate // settings.rate_clients),
                         timeout_s=settings.rate_seconds + 30)  # fmt: skip
    else:  # paced: the same rate, evenly spaced on one connection
        res = run_h2load(case.port, body, logf, clients=1, streams=settings.sat_streams,
                         duration_s=settings.rate_seconds, paced_rps=settings.rate,
                         timeout_s=settings.rate_seconds + 30)  # fmt: skip
    wall = time.monotonic() - t0
    cpu1 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
    b1 = cpu_seconds(case.backend_proc.pid)
    verify_grpc_ok(res, case.response_data_bytes)
    done = max(res.done, 1)
    return Run(
        kind=kind,
        repeat=repeat,
        h2load=res,
        wall_s=wall,
        proxy_cpu_us={n: (cpu1[n] - cpu0[n]) / done * 1e6 for n in procs},
        proxy_rss_kib={n: rss_kib(p.pid) for n, p in procs.items()},
        proxy_util=sum(cpu1[n] - cpu0[n] for n in procs) / wall,
        backend_cpu_us=(b1 - b0) / done * 1e6,
        backend_util=(b1 - b0) / wall,
        loadgen_util=res.loadgen_cpu_s / wall,
    )


def _attempt(case: Case, kind: str, repeat: int, s: Settings, body: Path, wd: Path) -> None:
    try:
        case.runs.append(_measure(case, kind, repeat, s, body, wd))
    except LoadError as exc:
        case.fail("failed", f"{kind} run {repeat}: {exc}")
    dead = [p.name for p in [*case.proxies, case.backend_proc] if p and not p.alive()]
    if dead:
        tails = "; ".join(f"{p.name}: {p.log_tail(300)}" for p in case.proxies if not p.alive())
        case.fail("failed", f"{', '.join(dead)} died during the {kind} run: {tails}")


def run_all(settings: Settings, log: Any) -> list[Case]:
    """Set up, run and tear down every selected case; return them with their runs."""
    require_tools("h2load", "nghttp")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        body = workdir / "request.bin"
        body.write_bytes(grpc_frame(echo_request(settings.payload_bytes)))
        cases: list[Case] = []
        try:
            log("starting processes")
            cases = setup(settings, workdir, log)
            live = [c for c in cases if c.status == "ok"]
            for case in live:
                try:
                    case.response_data_bytes = spot_check(case.port, body).data_bytes
                    if not settings.smoke:
                        run_h2load(
                            case.port, body, workdir / "warmup.log",
                            clients=settings.sat_clients, streams=settings.sat_streams,
                            duration_s=settings.warmup_seconds, timeout_s=30,
                        )  # fmt: skip
                except LoadError as exc:
                    case.fail("failed", f"spot check / warm-up: {exc}")
            repeats = 1 if settings.smoke else settings.repeats
            kinds = ("smoke",) if settings.smoke else ("saturation", "rate", "paced")
            for r in range(repeats):
                live = [c for c in cases if c.status == "ok"]
                order = live[r % len(live) :] + live[: r % len(live)] if live else []
                for kind in kinds:
                    for case in order:
                        if case.status == "ok":
                            _attempt(case, kind, r, settings, body, workdir)
                            log(_progress(case, kind, r))
        finally:
            stopped: set[int] = set()
            for case in cases:
                for p in [*case.proxies, *case.helpers, case.backend_proc]:
                    if p is not None and id(p) not in stopped:
                        stopped.add(id(p))
                        with contextlib.suppress(Exception):
                            p.stop()
    return cases


def _progress(case: Case, kind: str, repeat: int) -> str:
    if case.status != "ok" or not case.runs:
        return f"  [{repeat}] {kind:10} {case.name:18} {case.status}: {case.reason}"
    run = case.runs[-1]
    cpu = sum(run.proxy_cpu_us.values())
    p50 = f"{run.h2load.p50_ms:.2f}" if run.h2load.p50_ms is not None else "-"
    return (
        f"  [{repeat}] {kind:10} {case.name:18} {run.h2load.rps:9.0f} req/s  p50 {p50} ms  "
        f"proxy {cpu:6.1f} µs/req  backend {run.backend_util * 100:3.0f}% core"
    )
