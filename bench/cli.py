"""`python -m bench`: parse arguments, run the cases, print and write the results.

Does I/O (files under bench/out/, or --out). Exit status: 0 when every case that
could run passed (skips are fine: they are listed with their reason), 1 when a case
failed or nothing ran at all.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import Unavailable
from bench.report import add_ratios, backend_check, markdown_table, summarize, to_json
from bench.runner import BACKENDS, Case, Settings, run_all
from bench.sections import build
from bench.targets import REPO

OUT = Path(__file__).resolve().parent / "out"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="3 repeats of 2 s runs (about 2 min)")
    p.add_argument("--smoke", action="store_true", help="one short run per path (CI, < 30 s)")
    p.add_argument("--repeats", type=int, help="rounds of runs (default 5; --quick 3)")
    p.add_argument("--seconds", type=float, help="length of each measured run (default 5)")
    p.add_argument("--rate", type=int, default=1000, help="total req/s of the latency runs")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only cases whose path, backend or name matches (repeatable), "
                        "e.g. haproxy, sidecar2, direct/nginx")  # fmt: skip
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma list: nginx,pyecho")
    p.add_argument("--out", type=Path, default=OUT, help="directory for results (bench/out)")
    p.add_argument("--tree", type=Path, help="run `sidecar` and `services.echo` from this "
                   "checkout (e.g. another worktree) instead of this one")  # fmt: skip
    p.add_argument("--baseline", type=Path, help="also run the sidecar paths from this "
                   "checkout (cases sidecar1-base, sidecar2-base), side by side in the "
                   "same rotation: a change against its base")  # fmt: skip
    p.add_argument(
        "--scale",
        action="store_true",
        help="1,000 SRV endpoints: discovery time, pick cost, memory, lazy channels",
    )
    p.add_argument(
        "--streams",
        action="store_true",
        help="10,000 concurrent streams, 1 MiB messages, a long-lived bidi stream",
    )
    p.add_argument(
        "--overload",
        action="store_true",
        help="1x/2x/4x the app's capacity, with and without shedding",
    )
    p.add_argument(
        "--zerohop",
        action="store_true",
        help="in-process client and proxyless xDS vs direct, sidecar pair, HAProxy",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="the h2load table, then --zerohop, --scale, --streams and --overload",
    )
    return p


def _sections(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the sections asked for (--zerohop, --scale, --streams, --overload); worst exit
    status."""
    tree = args.tree.resolve() if args.tree else REPO

    def log(msg: str) -> None:
        print(msg, flush=True)

    # (flag, module, settings class, run function): imported only when asked for
    sections = (
        ("zerohop", "bench.zerohop", "ZeroHopSettings", "run_zerohop"),
        ("scale", "bench.scale", "ScaleSettings", "run_scale"),
        ("streams", "bench.streams", "StreamSettings", "run_streams"),
        ("overload", "bench.overload", "OverloadSettings", "run_overload"),
    )
    status = 0
    for flag, module_name, settings_name, run_name in sections:
        if not (getattr(args, flag) or args.all):
            continue
        module = importlib.import_module(module_name)
        kind = getattr(module, settings_name)
        settings = kind.tiny() if args.smoke else kind.quick() if args.quick else kind()
        run = getattr(module, run_name)
        status = max(status, run(settings, tree, log, argv, args.out))
    return status


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "missing"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def _meta(settings: Settings, argv: Sequence[str]) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench " + shlex.join(argv),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "build": build(),
        "h2load": _version(["h2load", "--version"]),
        "haproxy": _version(["haproxy", "-v"]),
        "nginx": _version(["nginx", "-v"]),
        "settings": settings.__dict__ | {"backends": list(settings.backends)},
    }


def _commands(cases: list[Case]) -> list[str]:
    seen: dict[str, str] = {}
    for case in cases:
        for run in case.runs:
            seen.setdefault(run.kind, shlex.join(run.h2load.command))
    return [f"- {kind}: `{cmd}`" for kind, cmd in seen.items()]


def _shape(s: Settings) -> str:
    if s.smoke:
        return (
            f"smoke: one run of {s.smoke_requests} requests per case (-c 2 -m 8), "
            "checked for gRPC success; too short for its numbers to mean anything."
        )
    return (
        f"{s.repeats} repeats; saturation runs {s.sat_seconds:g} s (-c {s.sat_clients} "
        f"-m {s.sat_streams}), latency runs {s.rate_seconds:g} s at {s.rate} req/s twice: "
        f"bursts (h2load --rps on {s.rate_clients} connections, whose 10 ms timer sends "
        f"~{s.rate // 100} requests at once) and paced (a timing script, one request every "
        f"{1000 / s.rate:g} ms on one connection); medians over repeats."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.scale or args.streams or args.overload or args.zerohop:
        return _sections(args, argv)
    settings = Settings(
        smoke=args.smoke, only=tuple(args.only), rate=args.rate,
        backends=tuple(b for b in args.backends.split(",") if b),
    )  # fmt: skip
    if args.tree:
        settings.tree = args.tree.resolve()
    if args.baseline:
        settings.baseline = args.baseline.resolve()
    if args.quick:
        settings.repeats, settings.sat_seconds, settings.rate_seconds = 3, 2.0, 2.0
    if args.repeats:
        settings.repeats = args.repeats
    if args.seconds:
        settings.sat_seconds = settings.rate_seconds = args.seconds
    unknown = set(settings.backends) - set(BACKENDS)
    if unknown:
        print(f"unknown backend(s) {sorted(unknown)}; known: {BACKENDS}", file=sys.stderr)
        return 2

    meta = _meta(settings, argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        cases = run_all(settings, log)
    except Unavailable as exc:
        print(f"bench: cannot run here: {exc}", file=sys.stderr)
        return 1
    meta["loadavg_end"] = os.getloadavg()
    rows = [summarize(c) for c in cases]
    add_ratios(rows)

    title = "Smoke run" if settings.smoke else "Benchmark results"
    la0, la1 = meta["loadavg_start"], meta["loadavg_end"]
    md = "\n".join(
        [
            f"# {title}, {meta['date']}",
            "",
            f"Host {meta['host']}, {meta['cpus']} CPUs, load average {la0[0]:.2f} at start, "
            f"{la1[0]:.2f} at end (other work on the machine makes numbers noisy).",
            f"{meta['h2load']}; {meta['haproxy']}; {meta['nginx']}; Python {meta['python']}; "
            f"sidecar: {meta['build']}.",
            f"Command: `{meta['command']}`; {_shape(settings)}",
            "",
            markdown_table(rows, settings),
            "",
            "Backend check (is the backend the bottleneck?):",
            *(
                ["- not judged: smoke runs are too short for 10 ms CPU ticks"]
                if settings.smoke
                else backend_check(rows) or ["- no proxied case ran"]
            ),
            "",
            "h2load command lines (ports differ per case):",
            *_commands(cases),
            "",
        ]
    )
    print()
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "smoke" if settings.smoke else "results"
    (args.out / f"{stem}.md").write_text(md)
    (args.out / f"{stem}.json").write_text(
        json.dumps(to_json(cases, rows, meta), indent=1, default=str) + "\n"
    )
    print(f"wrote {args.out / stem}.md and .json")
    failed = [c for c in cases if c.status == "failed"]
    ran = [c for c in cases if c.status == "ok"]
    for c in failed:
        print(f"FAILED {c.name}: {c.reason}", file=sys.stderr)
    status = 1 if failed or not ran else 0
    if args.all:
        status = max(status, _sections(args, argv))
    return status
