"""The same sidecar source, compiled and pure, side by side with direct and HAProxy.

`python -m bench.builds [--rounds 6] [--seconds 4]`: copies this checkout's `sidecar`
package without its compiled files into a temp dir (the pure build; sidecar/native.py),
starts nginx (echo module), HAProxy and one outbound sidecar per build in front of it,
and checks from each sidecar's log which build it runs. Then per round, every path in
rotating order: 1,000 req/s in bursts (`h2load -c 4 -m 16 --rps 250`) and paced (one
request every 1 ms on one connection); per sidecar also a saturation run (`-c 8 -m 16`)
for CPU per request. Every run must be all gRPC successes (bench/loadgen.py). Prints
medians: p50 and what each proxy adds to direct's, that as a multiple of HAProxy's, and
the sidecars' CPU µs per request. Needs the compiled build in place (`make native`,
which `make bench` runs first).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.grpcwire import echo_request, grpc_frame
from bench.loadgen import run_h2load, spot_check, verify_grpc_ok
from bench.procs import Managed, cpu_seconds
from bench.targets import REPO, start_haproxy, start_nginx, start_sidecar_outbound
from sidecar import native

BUILDS = {"compiled": native.LABELS[True], "pure": native.LABELS[False]}  # as the sidecar logs


def pure_tree(workdir: Path) -> Path:
    """This checkout's sidecar package without its compiled files."""
    tree = workdir / "pure"
    ignore = shutil.ignore_patterns("__pycache__", *native.BUILT)
    shutil.copytree(REPO / "sidecar", tree / "sidecar", ignore=ignore)
    return tree


def _build_of(proc: Managed) -> str:
    """What the sidecar logged at start: the build it runs."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = proc.log.read_text(errors="replace")
        for name, said in BUILDS.items():
            if f"h2relay data plane: {said}" in text:
                return name
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} never said which build it runs: {proc.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.builds", description=__doc__)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=4.0)
    a = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-builds-"))
    body = workdir / "req.bin"
    body.write_bytes(grpc_frame(echo_request(100)))
    procs: list[Managed] = []
    try:
        nginx, nginx_port = start_nginx(workdir)
        procs.append(nginx)
        haproxy, haproxy_port = start_haproxy(workdir, "haproxy", nginx_port)
        procs.append(haproxy)
        ports = {"direct": nginx_port, "haproxy": haproxy_port}
        sidecars: dict[str, Managed] = {}
        for name, tree in (("compiled", REPO), ("pure", pure_tree(workdir))):
            proc, port = start_sidecar_outbound(workdir, f"sidecar-{name}", nginx_port, tree)
            procs.append(proc)
            found = _build_of(proc)
            if found != name:
                raise RuntimeError(f"the {name} sidecar runs the {found} build (make native?)")
            ports[name], sidecars[name] = port, proc
        data_bytes = {name: spot_check(port, body).data_bytes for name, port in ports.items()}

        for name, port in ports.items():  # warm-up: connections, caches
            verify_grpc_ok(
                run_h2load(port, body, workdir / "h2load.log", clients=8, streams=16, duration_s=1),
                data_bytes[name],
            )
        p50: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        names = list(ports)
        for r in range(a.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                proc = sidecars.get(name)
                runs: tuple[tuple[str, dict[str, Any]], ...] = (
                    ("bursts", {"clients": 4, "streams": 16, "rps_per_client": 250}),
                    ("paced", {"clients": 1, "streams": 16, "paced_rps": 1000}),
                    ("saturation", {"clients": 8, "streams": 16}),
                )
                for mode, kw in runs:
                    if mode == "saturation" and proc is None:
                        continue
                    before = cpu_seconds(proc.pid) if proc else 0.0
                    res = run_h2load(
                        ports[name], body, workdir / "h2load.log", duration_s=a.seconds, **kw
                    )
                    verify_grpc_ok(res, data_bytes[name])
                    assert res.p50_ms is not None
                    p50.setdefault((name, mode), []).append(res.p50_ms)
                    if proc is not None:
                        used = (cpu_seconds(proc.pid) - before) / res.done * 1e6
                        cpu.setdefault((name, mode), []).append(used)
        print(f"{a.rounds} rounds of {a.seconds:g} s per run, medians")
        print("| path | mode | p50 ms | added ms | x HAProxy added | CPU us/req |")
        print("|---|---|---|---|---|---|")
        med = {k: statistics.median(v) for k, v in p50.items()}
        for mode in ("bursts", "paced"):
            direct = med["direct", mode]
            hap = med["haproxy", mode] - direct
            for name in names:
                added = med[name, mode] - direct
                ratio = "-" if name == "direct" else f"{added / hap:.2f}"
                used = cpu.get((name, mode))
                per_req = f"{statistics.median(used):.1f}" if used else "-"
                print(
                    f"| {name} | {mode} | {med[name, mode]:.3f} | {added:+.3f} | {ratio} | "
                    f"{per_req} |"
                )
        for name in sidecars:
            used_sat = statistics.median(cpu[name, "saturation"])
            print(f"| {name} | saturation | {med[name, 'saturation']:.3f} | | | {used_sat:.1f} |")
        return 0
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
