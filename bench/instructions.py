"""Instructions per request of one outbound sidecar hop, for several trees side by side.

`python -m bench.instructions --tree ../main --tree . [--requests 2000] [--repeats 3]`:
starts nginx (echo module) and, per tree, one outbound sidecar in front of it under
`valgrind --tool=callgrind`; warms each up (Python needs ~1,000 requests before its count
settles), then per repeat zeroes the counters, sends N requests with h2load, dumps, does
the same with 2N, and prints (Ir(2N) - Ir(N)) / N: the instructions one more request
costs, with fixed costs removed (FACTS.md, "Counting instructions instead of time": on a
busy machine repeats agree within a few percent where CPU time moves by 1.5-2.5x). User
space only; the kernel's share is not counted. Each tree must be built (`make native`)
and have its stubs; its sidecar logs which build it runs. Needs valgrind and h2load.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.grpcwire import echo_request, grpc_frame
from bench.procs import free_port, wait_port
from bench.targets import _python_env, require_tools, sidecar_config, start_nginx

PATH = "/meshtest.echo.v1.Echo/Unary"


def _h2load(port: int, body: Path, n: int) -> None:
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "1", "-m", "1", "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, timeout=1800, check=True,
    ).stdout  # fmt: skip
    found = re.search(r"(\d+) succeeded, (\d+) failed", out)
    if found is None or int(found[1]) != n:
        raise RuntimeError(f"h2load: not all {n} requests succeeded:\n{out}")


def _instructions(pid: int, dumps: Path) -> int:
    """Dump the counters of callgrind process `pid`; the instructions since the last zero."""
    before = set(dumps.parent.glob(dumps.name + "*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        new = set(dumps.parent.glob(dumps.name + "*")) - before
        text = new and next(iter(new)).read_text(errors="replace")
        found = text and re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if found:
            return int(found[1])
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump for process {pid}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--tree", type=Path, action="append", required=True, help="a checkout")
    p.add_argument("--requests", type=int, default=2000, help="N (default 2000)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    require_tools("valgrind", "callgrind_control", "h2load", "nginx")
    wd = Path(tempfile.mkdtemp(prefix="bench-instructions-"))
    body = wd / "body.bin"
    body.write_bytes(grpc_frame(echo_request(100)))
    nginx, nginx_port = start_nginx(wd)
    sidecars: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for i, tree in enumerate(args.tree):
            name = f"{i}:{tree}"
            port = free_port()
            cfg = sidecar_config(
                admin=f"127.0.0.1:{free_port()}",
                outbound=f"127.0.0.1:{port}",
                endpoints=[f"127.0.0.1:{nginx_port}"],
            )
            config = wd / f"sidecar{i}.yaml"
            config.write_text(yaml.safe_dump(cfg, sort_keys=False))
            dumps = wd / f"callgrind{i}.out"
            with (wd / f"sidecar{i}.log").open("wb") as log:
                proc = subprocess.Popen(
                    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dumps}",
                     sys.executable, "-m", "sidecar", "run", "-c", str(config)],
                    cwd=tree, env=_python_env(tree.resolve()), stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            sidecars[name] = (proc, port, dumps)
        for proc, port, _ in sidecars.values():
            wait_port(port, proc, 1200)  # Python under valgrind starts in minutes, not seconds
        for _, port, _ in sidecars.values():
            _h2load(port, body, 1500)
        n = args.requests
        results: dict[str, list[float]] = {name: [] for name in sidecars}
        for _ in range(args.repeats):
            for name, (proc, port, dumps) in sidecars.items():
                counts = []
                for size in (n, 2 * n):
                    subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                                   capture_output=True)  # fmt: skip
                    _h2load(port, body, size)
                    counts.append(_instructions(proc.pid, dumps))
                results[name].append((counts[1] - counts[0]) / n)
        print(f"instructions per request, one outbound hop, h2load -c 1 -m 1, N={n}")
        print("| tree | repeats (k) | median (k) |")
        print("|---|---|---|")
        for name, values in results.items():
            each = ", ".join(f"{v / 1000:.1f}" for v in values)
            print(f"| {name} | {each} | {statistics.median(values) / 1000:.1f} |")
    finally:
        for proc, _, _ in sidecars.values():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        nginx.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
