"""The zero-hop paths: in-process client and proxyless xDS vs the hops.

Does I/O: starts `python -m services.echo`, a sidecar pair, HAProxy and `sidecar xds`,
then runs `bench/grpc_client.py closed` (a grpcio process of its own) against each path,
in rotating order, `repeats` times; medians over the repeats. Then direct, in-process
and xDS once more side by side in one client process (`alternate`: blocks in turn),
which takes the noise between processes out of their ratio. Paths:

- `direct`: grpcio channel → echo;
- `inprocess`: `sidecar.client.connect("echo", FILE)` in the client process → echo
  (the whole outbound policy stack runs in the caller);
- `xds`: grpcio channel to `xds:///echo`, resolved by `sidecar xds` (ADS) → echo;
- `sidecar2`: grpcio → sidecar A outbound → sidecar B inbound → echo;
- `haproxy`: grpcio → HAProxy (`proto h2`) → echo.

The client makes unary calls (100-byte payload) with `concurrency` in flight. Target
`inprocess` and `xds` throughput ≥ 90% of `direct`.
"""

# ruff: noqa: RUF001  (the markdown tables use typographic dashes and signs on purpose)

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.procs import Managed, StartFailed, Unavailable, free_port
from bench.sections import (
    Log,
    client_env,
    header,
    meta,
    run_client,
    start_echo_sidecar,
    table,
    write,
)
from bench.targets import _python_env, start, start_haproxy, start_pyecho

PATHS = ("direct", "inprocess", "xds", "sidecar2", "haproxy")


@dataclass
class ZeroHopSettings:
    repeats: int = 5
    seconds: float = 5.0
    concurrency: int = 16

    @classmethod
    def quick(cls) -> ZeroHopSettings:
        return cls(repeats=3, seconds=2.0)

    @classmethod
    def tiny(cls) -> ZeroHopSettings:
        return cls(repeats=1, seconds=0.5, concurrency=4)


def _run(target: str, s: ZeroHopSettings, env: dict[str, str]) -> dict[str, Any]:
    return run_client("closed", target, "--concurrency", str(s.concurrency),
                      "--seconds", str(s.seconds), "--deadline-ms", "5000",
                      timeout_s=120 + s.seconds, env=env)  # fmt: skip


def _start_xds(wd: Path, echo_port: int, tree: Path) -> tuple[Managed, Path]:
    port = free_port()
    cfg = {"upstreams": {"echo": {"endpoints": [f"127.0.0.1:{echo_port}"], "lb": "round_robin"}}}
    path = wd / "xds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = start(
        "sidecar-xds",
        [*_sidecar(), "xds", "-c", str(path), "--listen", f"127.0.0.1:{port}"],
        [port], wd, cwd=tree, env=_python_env(tree),
    )  # fmt: skip
    bootstrap = wd / "bootstrap.json"
    bootstrap.write_text(json.dumps({
        "xds_servers": [{"server_uri": f"127.0.0.1:{port}", "channel_creds": [{"type": "insecure"}]}],
        "node": {"id": "bench"},
    }))  # fmt: skip
    return proc, bootstrap


def _sidecar() -> list[str]:
    import sys

    return [sys.executable, "-m", "sidecar"]


def run_zerohop(s: ZeroHopSettings, tree: Path, log: Log, argv: list[str], out: Path) -> int:
    m = meta(argv)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    skipped: dict[str, str] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-zerohop-") as tmp, contextlib.ExitStack() as st:
        wd = Path(tmp)
        echo, echo_port = start_pyecho(wd, tree)
        st.callback(echo.stop)
        targets: dict[str, tuple[str, dict[str, str]]] = {}
        env = client_env()
        targets["direct"] = (f"127.0.0.1:{echo_port}", env)
        client_cfg = wd / "client.yaml"
        client_cfg.write_text(yaml.safe_dump({
            "upstreams": {"echo": {"endpoints": [f"127.0.0.1:{echo_port}"]}},
        }))  # fmt: skip
        targets["inprocess"] = (f"inprocess:{client_cfg}", env)
        try:
            xds, bootstrap = _start_xds(wd, echo_port, tree)
            st.callback(xds.stop)
            targets["xds"] = ("xds:///echo", {**env, "GRPC_XDS_BOOTSTRAP": str(bootstrap)})
        except (Unavailable, StartFailed) as exc:
            skipped["xds"] = str(exc)
        try:
            inbound, in_port, _ = start_echo_sidecar(
                wd, "sidecar-in", tree, inbound_app=f"127.0.0.1:{echo_port}"
            )
            st.callback(inbound.stop)
            outbound, out_port, _ = start_echo_sidecar(
                wd, "sidecar-out", tree, endpoints=[f"127.0.0.1:{in_port}"]
            )
            st.callback(outbound.stop)
            targets["sidecar2"] = (f"127.0.0.1:{out_port}", env)
        except (Unavailable, StartFailed) as exc:
            skipped["sidecar2"] = str(exc)
        try:
            haproxy, ha_port = start_haproxy(wd, "haproxy", echo_port)
            st.callback(haproxy.stop)
            targets["haproxy"] = (f"127.0.0.1:{ha_port}", env)
        except (Unavailable, StartFailed) as exc:
            skipped["haproxy"] = str(exc)
        order = [p for p in PATHS if p in targets]
        for repeat in range(s.repeats):
            rotated = order[repeat % len(order) :] + order[: repeat % len(order)]
            for path in rotated:
                target, penv = targets[path]
                try:
                    r = _run(target, s, penv)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures.append(f"{path}: {exc}")
                    continue
                bad = {k: v for k, v in r["statuses"].items() if k != "OK"}
                if bad:
                    failures.append(f"{path}: non-OK statuses {bad}")
                runs[path].append(r)
                log(f"zerohop {repeat + 1}/{s.repeats} {path}: {r['ok_per_s']:,.0f} calls/s")
        paired = _alternate(targets, s, log, failures)
    m["loadavg_end"] = __import__("os").getloadavg()
    rows, summary = _rows(runs, skipped)
    md = [
        *header("Zero-hop paths: in-process client and proxyless xDS", m),
        f"Python grpcio client process, unary Echo (100-byte payload), {s.concurrency} calls "
        f"in flight, {s.seconds:g} s runs, {s.repeats} rotating repeats, medians; backend "
        "`python -m services.echo`. Target: in-process and xDS ≥ 0.90 × direct.",
        "",
        *table(
            ["path", "calls/s (min–max)", "× direct", "p50 / p99 ms", "client CPU µs/call"], rows
        ),
        "",
        f"The same paths side by side in **one** client process ({ALTERNATE_BLOCKS} rounds of "
        f"{s.seconds / 2:g} s blocks, each path in turn, order rotating): no noise between "
        'processes. "× direct" is the median over rounds of the ratio to the direct block '
        "of the same round.",
        "",
        *table(["path", "calls/s (min–max)", "× direct", "client CPU µs/call"], paired),
        "",
        *(f"- FAILED {f}" for f in failures),
    ]
    write(out, "zerohop", md, {"meta": m, "runs": runs, "summary": summary, "paired": paired,
                               "skipped": skipped, "failures": failures})  # fmt: skip
    return 1 if failures or not runs["direct"] else 0


ALTERNATE_BLOCKS = 6
_ONE_PROCESS = ("direct", "inprocess", "xds")  # paths a single client process can hold


def _alternate(
    targets: dict[str, tuple[str, dict[str, str]]],
    s: ZeroHopSettings,
    log: Log,
    failures: list[str],
) -> list[list[object]]:
    """Direct, in-process and xDS in one client process, alternating blocks (table rows)."""
    paths = [p for p in _ONE_PROCESS if p in targets]
    if len(paths) < 2 or paths[0] != "direct":
        return []
    env = {k: v for p in paths for k, v in targets[p][1].items()}  # xds needs its bootstrap
    also = [a for p in paths[1:] for a in ("--also", targets[p][0])]
    block_s = s.seconds / 2
    try:
        result = run_client("alternate", targets["direct"][0], *also, "--concurrency",
                            str(s.concurrency), "--seconds", str(block_s), "--blocks",
                            str(ALTERNATE_BLOCKS), "--deadline-ms", "5000", env=env,
                            timeout_s=120 + 2 * block_s * ALTERNATE_BLOCKS * len(paths))  # fmt: skip
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        failures.append(f"alternate: {exc}")
        return []
    by_target: dict[str, list[dict[str, Any]]] = result["runs"]
    blocks = {p: by_target[targets[p][0]] for p in paths}
    rows: list[list[object]] = []
    for p in paths:
        rates = [b["ok_per_s"] for b in blocks[p]]
        ratios = [b["ok_per_s"] / d["ok_per_s"] for b, d in zip(blocks[p], blocks["direct"],
                                                                 strict=True)]  # fmt: skip
        cpu = [b["loop_cpu_s"] / max(1, sum(b["statuses"].values())) * 1e6 for b in blocks[p]]
        bad = {k: v for b in blocks[p] for k, v in b["statuses"].items() if k != "OK"}
        if bad:
            failures.append(f"alternate {p}: non-OK statuses {bad}")
        rows.append([p, f"{statistics.median(rates):,.0f} ({min(rates):,.0f}–{max(rates):,.0f})",
                     statistics.median(ratios), f"{statistics.median(cpu):.0f}"])  # fmt: skip
        log(f"zerohop alternate {p}: {statistics.median(rates):,.0f} calls/s")
    return rows


def _rows(
    runs: dict[str, list[dict[str, Any]]], skipped: dict[str, str]
) -> tuple[list[list[object]], dict[str, dict[str, float]]]:
    summary: dict[str, dict[str, float]] = {}
    for path, rs in runs.items():
        if not rs:
            continue
        rates = [r["ok_per_s"] for r in rs]
        calls = [sum(r["statuses"].values()) or 1 for r in rs]
        summary[path] = {
            "calls_per_s": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "client_cpu_us": statistics.median(
                r["loop_cpu_s"] / c * 1e6 for r, c in zip(rs, calls, strict=True)
            ),
        }
    base = summary.get("direct", {}).get("calls_per_s")
    rows: list[list[object]] = []
    for path in PATHS:
        got = summary.get(path)
        if got is None:
            rows.append([path, f"skipped: {skipped.get(path, 'no successful run')}", "", "", ""])
            continue
        ratio = got["calls_per_s"] / base if base else None
        rows.append([
            path,
            f"{got['calls_per_s']:,.0f} ({got['min']:,.0f}–{got['max']:,.0f})",
            ratio,
            f"{got['p50_ms']:.2f} / {got['p99_ms']:.2f}",
            f"{got['client_cpu_us']:.0f}",
        ])  # fmt: skip
    return rows, summary
