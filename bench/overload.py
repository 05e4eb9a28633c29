"""`python -m bench --overload`: the overload run. Does I/O.

The app: `python -m bench.slow_app` (services.echo's servicer with W workers of D ms
each, an unbounded FIFO in front: capacity W/D calls/s, stable on a shared machine
because it sleeps). Paths, side by side, alternating per load:
- `direct`: client -> app (what the app alone does when overloaded)
- `no-shedding`: client -> sidecar inbound without admission -> app
- `shedding`: client -> sidecar inbound with `inbound.admission` (max_concurrency = W,
  a bounded CoDel queue) -> app.

Order: capacity C first (closed loop straight to the app); the unloaded latency of
each path (open loop at C/4); then offered load 1x, 2x, 4x C per path. The load is
open loop (bench/grpc_client.py `openloop`: call i starts at t0 + i/rate whatever
the others are doing), each call with a deadline, bounded in time. Reported: goodput
(OK calls/s), p50/p99 of OK calls, drop ratio (calls answered UNAVAILABLE with
x-sidecar-error, over calls offered), every status seen.

Targets: goodput at 4x >= 90% of goodput at 1x; OK p99 < 2 x unloaded p99
+ the CoDel target.
"""

# ruff: noqa: RUF001  (the markdown tables use typographic dashes and signs on purpose)

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import Managed, StartFailed, Unavailable, cpu_seconds, free_port, start
from bench.sections import (
    Log,
    admin_get,
    header,
    meta,
    metric,
    run_client,
    start_echo_sidecar,
    table,
    write,
)
from bench.targets import REPO, _python_env

PATHS = ("direct", "no-shedding", "shedding")


@dataclass
class OverloadSettings:
    workers: int = 2
    delay_ms: int = 20
    loads: tuple[float, ...] = (1.0, 2.0, 4.0)
    seconds: float = 5.0
    deadline_ms: float = 1000.0
    queue_size: int = 16
    codel_target_ms: float = 5.0
    codel_interval_ms: float = 100.0
    capacity_seconds: float = 3.0
    smoke: bool = False
    paths: tuple[str, ...] = field(default=PATHS)
    # more `inbound.admission` keys for the shedding path (e.g. {"adaptive": "gradient"})
    admission_extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> OverloadSettings:
        return cls(seconds=3.0, capacity_seconds=2.0)

    @classmethod
    def tiny(cls) -> OverloadSettings:
        return cls(seconds=1.0, capacity_seconds=1.0, loads=(1.0, 4.0), smoke=True)


def start_app(wd: Path, s: OverloadSettings, tree: Path) -> tuple[Managed, int]:
    port = free_port()
    env = _python_env(tree)
    env["PYTHONPATH"] = f"{tree}{os.pathsep}{REPO}"
    cmd = [sys.executable, "-m", "bench.slow_app", "--port", str(port),
           "--workers", str(s.workers), "--delay-ms", str(s.delay_ms)]  # fmt: skip
    return start("slow-app", cmd, [port], wd, cwd=REPO, env=env), port


def run_overload(s: OverloadSettings, tree: Path, log: Log, argv: list[str], out: Path) -> int:
    m = meta(argv)
    data: dict[str, Any] = {"meta": m, "settings": s.__dict__}
    admission = {
        "max_concurrency": s.workers,
        "queue_size": s.queue_size,
        "codel_target_ms": s.codel_target_ms,
        "codel_interval_ms": s.codel_interval_ms,
        **s.admission_extra,
    }
    data["admission"] = admission
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        wd = Path(tmp)
        procs: list[Managed] = []
        try:
            try:
                app, app_port = start_app(wd, s, tree)
                procs.append(app)
                targets: dict[str, tuple[str, Managed | None, int | None]] = {
                    "direct": (f"127.0.0.1:{app_port}", None, None)
                }
                if "no-shedding" in s.paths:
                    p, port, adm = start_echo_sidecar(
                        wd, "sidecar-noshed", tree, inbound_app=f"127.0.0.1:{app_port}"
                    )
                    procs.append(p)
                    targets["no-shedding"] = (f"127.0.0.1:{port}", p, adm)
                if "shedding" in s.paths:
                    p, port, adm = start_echo_sidecar(
                        wd, "sidecar-shed", tree, inbound_app=f"127.0.0.1:{app_port}",
                        extra={"inbound": {"admission": admission}},
                    )  # fmt: skip
                    procs.append(p)
                    targets["shedding"] = (f"127.0.0.1:{port}", p, adm)
            except (Unavailable, StartFailed) as exc:
                log(f"overload: cannot run: {exc}")
                return 1
            cap = run_client("closed", targets["direct"][0], "--concurrency", str(4 * s.workers),
                             "--seconds", str(s.capacity_seconds),
                             "--deadline-ms", str(s.deadline_ms))  # fmt: skip
            capacity = cap["ok_per_s"]
            data["capacity"] = cap
            log(f"capacity (closed loop, direct): {capacity:.1f} OK/s "
                f"(nominal {s.workers * 1000 / s.delay_ms:.0f})")  # fmt: skip
            runs: list[dict[str, Any]] = []
            loads = [("unloaded", 0.25), *((f"{x:g}x", x) for x in s.loads)]
            for i, (label, factor) in enumerate(loads):
                names = list(targets)
                names = names[i % len(names) :] + names[: i % len(names)]
                for name in names:
                    target, proc, adm = targets[name]
                    runs.append(_one(name, label, factor, capacity, target, proc, adm, app, s))
                    r = runs[-1]
                    log(f"  {label:8} {name:12} offered {r['offered_per_s']:6.0f}/s goodput "
                        f"{r['goodput']:6.1f}/s p50 {_f(r['p50_ms'])} p99 {_f(r['p99_ms'])} ms "
                        f"{r['errors']}")  # fmt: skip
            data["runs"] = runs
            dead = [p.name for p in procs if not p.alive()]
            if dead:
                log(f"died during the run: {dead}")
                return 1
        finally:
            for p in procs:
                p.stop()
    m["loadavg_end"] = os.getloadavg()
    md = header("Overload", m) + _markdown(data, s)
    write(out, "overload-smoke" if s.smoke else "overload", md, data)
    bad = [
        r for r in data["runs"] if set(r["statuses"]) - {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
    ]
    return 1 if bad else 0


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _one(
    name: str, label: str, factor: float, capacity: float, target: str,
    proc: Managed | None, admin: int | None, app: Managed, s: OverloadSettings,
) -> dict[str, Any]:  # fmt: skip
    rate = max(1.0, capacity * factor)
    before = metric(admin_get(admin, "/metrics"), "sidecar_dropped_requests_total") if admin else 0
    c0 = cpu_seconds(proc.pid) if proc else 0.0
    a0 = cpu_seconds(app.pid)
    res = run_client("openloop", target, "--rate", f"{rate:.1f}", "--seconds", str(s.seconds),
                     "--deadline-ms", str(s.deadline_ms),
                     timeout_s=s.seconds + s.deadline_ms / 1000 + 60)  # fmt: skip
    cpu = cpu_seconds(proc.pid) - c0 if proc else None
    after = metric(admin_get(admin, "/metrics"), "sidecar_dropped_requests_total") if admin else 0
    drops = sum(v for k, v in res["errors"].items() if not k.endswith("/-"))
    offered = max(1, res["offered"])
    return {
        "path": name,
        "load": label,
        "factor": factor,
        "offered_per_s": rate,
        **res,
        "sidecar_drops": drops,
        "drop_ratio": drops / offered,
        "dropped_metric_delta": after - before,
        "sidecar_cpu_us_per_call": None if cpu is None else cpu / offered * 1e6,
        "app_cpu_s": cpu_seconds(app.pid) - a0,
    }


def _markdown(data: dict[str, Any], s: OverloadSettings) -> list[str]:
    cap = data["capacity"]
    md = [
        f"App: `bench.slow_app`, {s.workers} workers × {s.delay_ms} ms (nominal "
        f"{s.workers * 1000 / s.delay_ms:.0f} calls/s). Measured capacity C (closed loop, "
        f"{cap['concurrency']} callers, straight to the app): **{cap['ok_per_s']:.1f} OK/s**, "
        f"p50 {_f(cap['p50_ms'])} ms. Offered load open loop, {s.seconds:g} s of sending per run (goodput = OK calls / time from the first call to the last answer), "
        f"deadline {s.deadline_ms:g} ms per call; unloaded = C/4.",
        f"Shedding path: `inbound.admission: {data['admission']}`, run by `sidecar run`.",
        "",
    ]  # fmt: skip
    runs = data["runs"]
    base = {r["path"]: r for r in runs if r["load"] == "unloaded"}
    one_x = {r["path"]: r for r in runs if r["load"] == "1x"}
    rows = []
    for r in sorted(runs, key=lambda r: (PATHS.index(r["path"]), r["factor"])):
        g1 = one_x.get(r["path"], {}).get("goodput")
        u99 = base.get(r["path"], {}).get("p99_ms")
        limit = None if u99 is None else 2 * u99 + s.codel_target_ms
        p99_ok = "–" if limit is None or r["p99_ms"] is None or r["load"] == "unloaded" else (
            "yes" if r["p99_ms"] < limit else "no")  # fmt: skip
        rows.append([
            r["path"], r["load"], r["offered_per_s"], r["goodput"],
            f"{100 * r['goodput'] / g1:.0f}%" if g1 else "–",
            _f(r["p50_ms"]), _f(r["p99_ms"]), p99_ok,
            f"{100 * r['drop_ratio']:.1f}%",
            ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "–",
            _f(r["sidecar_cpu_us_per_call"]),
        ])  # fmt: skip
    md += table(
        ["path", "load", "offered/s", "goodput OK/s", "of 1× goodput", "OK p50 ms",
         "OK p99 ms", "p99 < 2×unloaded+target", "drop ratio", "errors (status/x-sidecar-error)",
         "sidecar CPU µs per offered call"],
        rows,
    )  # fmt: skip
    md += ["", "Targets per path:"]
    for path in PATHS:
        at = {r["load"]: r for r in runs if r["path"] == path}
        if "1x" not in at:
            continue
        worst = at.get(f"{max(s.loads):g}x")
        if worst is None:
            continue
        ratio = worst["goodput"] / max(1e-9, at["1x"]["goodput"])
        u99 = at["unloaded"]["p99_ms"] if "unloaded" in at else None
        p99s = [at[k]["p99_ms"] for k in at if k != "unloaded" and at[k]["p99_ms"] is not None]
        limit = None if u99 is None else 2 * u99 + s.codel_target_ms
        md.append(
            f"- {path}: goodput at {max(s.loads):g}× = {100 * ratio:.0f}% of 1× "
            f"({'met' if ratio >= 0.9 else 'not met'}, target ≥ 90%); worst OK p99 "
            f"{_f(max(p99s) if p99s else None)} ms vs limit {_f(limit)} ms "
            f"({'met' if limit is not None and p99s and max(p99s) < limit else 'not met'})"
        )
    md.append("")
    return md
