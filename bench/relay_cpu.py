"""CPU per request of one sidecar hop and of a sidecar pair, beside direct.

`python -m bench.relay_cpu [--repeats 3] [--seconds 3]`: starts nginx (echo module), an
outbound-only sidecar in front of it and a sidecar pair (outbound -> inbound -> nginx), then per round runs `h2load -c 8 -m 16` against each
path in rotating order. CPU is utime+stime of each sidecar process over the run divided
by the requests done; every run must show the same DATA bytes per request as direct
(h2load counts HTTP status only; a gRPC error would change the byte count).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.grpcwire import echo_request, grpc_frame
from bench.procs import Managed, cpu_seconds, free_port
from bench.targets import REPO, sidecar_config, start_nginx, start_sidecar

PATH = "/meshtest.echo.v1.Echo/Unary"


def h2load(port: int, body: Path, seconds: float) -> tuple[int, float, float]:
    """(requests done, req/s, DATA bytes per request) of one saturation run."""
    out = subprocess.run(
        ["h2load", "-c", "8", "-m", "16", "-D", f"{int(seconds * 1000)}ms", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)[1])  # type: ignore[index]
    ok = int(re.search(r"(\d+) succeeded", out)[1])  # type: ignore[index]
    if ok != done:
        raise RuntimeError(f"h2load: {done - ok} of {done} requests failed:\n{out}")
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)[1])  # type: ignore[index]
    data = int(re.search(r"\((\d+)\) data", out)[1])  # type: ignore[index]
    return done, rps, data / max(done, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    wd = Path(tempfile.mkdtemp(prefix="relay-cpu-"))
    body = wd / "body.bin"
    body.write_bytes(grpc_frame(echo_request(100)))
    procs: list[Managed] = []
    try:
        nginx, nginx_port = start_nginx(wd)
        procs.append(nginx)
        paths: dict[str, tuple[int, list[Managed]]] = {"direct": (nginx_port, [])}

        def sidecar(name: str, **kw: object) -> tuple[Managed, int]:
            port = free_port()
            listen = f"127.0.0.1:{port}"
            key = "outbound" if "endpoints" in kw else "inbound"
            cfg = sidecar_config(admin=f"127.0.0.1:{free_port()}", **{key: listen}, **kw)  # type: ignore[arg-type]
            proc = start_sidecar(wd, name, cfg, port, REPO)
            procs.append(proc)
            return proc, port

        proc, port = sidecar("1hop", endpoints=[f"127.0.0.1:{nginx_port}"])
        paths["sidecar 1 hop"] = (port, [proc])
        inbound, in_port = sidecar("in", app=f"127.0.0.1:{nginx_port}")
        outbound, out_port = sidecar("out", endpoints=[f"127.0.0.1:{in_port}"])
        paths["sidecar pair"] = (out_port, [outbound, inbound])

        names = list(paths)
        results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        expected_bytes = None
        for name in names:  # warm-up (connections, caches), not recorded
            h2load(paths[name][0], body, 1.0)
        for round_ in range(args.repeats):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                port, watched = paths[name]
                before = [cpu_seconds(p.pid) for p in watched]
                done, rps, per_req = h2load(port, body, args.seconds)
                after = [cpu_seconds(p.pid) for p in watched]
                if expected_bytes is None:
                    expected_bytes = per_req
                if abs(per_req - expected_bytes) > 0.5:
                    raise RuntimeError(
                        f"{name}: {per_req} DATA bytes/request, direct had {expected_bytes}"
                    )
                cpu_us = sum(a - b for a, b in zip(after, before, strict=False)) / done * 1e6
                results[name].append((rps, cpu_us / max(len(watched), 1)))
        print(f"h2load -c 8 -m 16, {args.seconds:g} s runs, medians of {args.repeats}")
        print("| path | req/s | CPU µs/request per sidecar process |")
        print("|---|---|---|")
        for name in names:
            rps = statistics.median(r for r, _ in results[name])
            cpu = statistics.median(c for _, c in results[name])
            print(f"| {name} | {rps:,.0f} | {'-' if name == 'direct' else f'{cpu:.0f}'} |")
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    main()
