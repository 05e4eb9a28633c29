"""`python -m bench --streams`: streaming and large-message runs.

Does I/O. Backend: the project's `python -m services.echo` (a grpcio server; nginx's
echo module cannot answer a stream message by message). Paths: `direct` (client ->
echo) and `sidecar` (client -> sidecar outbound -> echo), side by side, alternating.
The client is bench/grpc_client.py in its own process, so its CPU is not the proxy's.

1. Concurrent streams: N Bidi streams on one connection, each with one message echoed
   so it exists end to end; RSS of the sidecar (and of the backend) with all open,
   minus RSS just before (after a warm-up run) = bytes per in-flight stream
   (target: <= 10 KB). Then all are half-closed and must end OK.
2. 1 MiB unary messages: calls/s, MiB/s, p50/p99, proxy CPU per call and per MiB.
3. One long-lived Bidi stream, 64 messages in flight: messages/s, proxy CPU per message.
"""

# ruff: noqa: RUF001  (the markdown tables use typographic dashes and signs on purpose)

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import Managed, StartFailed, Unavailable, cpu_seconds, rss_kib
from bench.sections import (
    Log,
    admin_get,
    client_cmd,
    client_env,
    header,
    meta,
    metric,
    run_client,
    start_echo_sidecar,
    table,
    write,
)
from bench.targets import REPO, start_pyecho

MiB = 1 << 20


@dataclass
class StreamSettings:
    streams: int = 10_000
    big_calls: int = 300
    big_size: int = MiB
    big_concurrency: int = 4
    bidi_seconds: float = 5.0
    bidi_window: int = 64
    repeats: int = 3
    smoke: bool = False

    @classmethod
    def quick(cls) -> StreamSettings:
        return cls(streams=2000, big_calls=30, bidi_seconds=2.0, repeats=1)

    @classmethod
    def tiny(cls) -> StreamSettings:
        return cls(streams=50, big_calls=3, bidi_seconds=0.5, repeats=1, smoke=True)


def _open_streams(
    target: str, n: int, watch: dict[str, Managed], admin: int | None, timeout_s: float
) -> dict[str, Any]:
    """Run the `streams` client; measure RSS of `watch` before, with all open, after."""
    before = {k: rss_kib(p.pid) for k, p in watch.items()}
    cpu0 = {k: cpu_seconds(p.pid) for k, p in watch.items()}
    proc = subprocess.Popen(
        client_cmd("streams", target, "-n", str(n)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO, env=client_env(),
    )  # fmt: skip
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if not line.startswith("OPEN"):
            raise RuntimeError(f"streams client: {line!r} {proc.stderr.read()[-600:]}")  # type: ignore[union-attr]
        time.sleep(1.0)  # let both sides settle (buffers, lazily built state)
        during = {k: rss_kib(p.pid) for k, p in watch.items()}
        in_flight = None
        if admin is not None:
            in_flight = metric(admin_get(admin, "/metrics"), "sidecar_requests_in_flight")
        proc.stdin.write("close\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"streams client gave no result: {err[-600:]}")
    import json

    res: dict[str, Any] = json.loads(lines[-1])
    time.sleep(0.5)
    after = {k: rss_kib(p.pid) for k, p in watch.items()}
    res["rss_kib"] = {k: {"before": before[k], "open": during[k], "after": after[k]} for k in watch}
    res["cpu_s"] = {k: cpu_seconds(p.pid) - cpu0[k] for k, p in watch.items()}
    res["sidecar_in_flight_gauge"] = in_flight
    opened = max(1, res["opened"])
    res["kib_per_stream"] = {k: (during[k] - before[k]) / opened for k in watch}
    return res


def _cpu_run(
    procs: dict[str, Managed], fn: Any, *args: Any, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, float]]:
    c0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
    res = fn(*args, **kwargs)
    return res, {k: cpu_seconds(p.pid) - c0[k] for k, p in procs.items()}


def run_streams(s: StreamSettings, tree: Path, log: Log, argv: list[str], out: Path) -> int:
    m = meta(argv)
    data: dict[str, Any] = {"meta": m, "settings": s.__dict__}
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        wd = Path(tmp)
        procs: list[Managed] = []
        try:
            try:
                echo, echo_port = start_pyecho(wd, tree)
                procs.append(echo)
                # limits.max_requests (default 1,024 calls in flight per upstream) would
                # refuse most of the N streams: this section measures memory, not limits
                roomy = {"limits": {"max_requests": 4 * s.streams, "max_pending": 4 * s.streams}}
                sidecar, sc_port, admin = start_echo_sidecar(
                    wd,
                    "sidecar-out",
                    tree,
                    endpoints=[f"127.0.0.1:{echo_port}"],
                    extra={"upstreams": {"echo": roomy}},
                )
                procs.append(sidecar)
            except (Unavailable, StartFailed) as exc:
                log(f"streams: cannot run: {exc}")
                return 1
            paths = {"direct": f"127.0.0.1:{echo_port}", "sidecar": f"127.0.0.1:{sc_port}"}
            watch = {"direct": {"echo": echo}, "sidecar": {"sidecar": sidecar, "echo": echo}}
            data["idle_rss_kib"] = {"sidecar": sidecar.idle_rss_kib, "echo": echo.idle_rss_kib}
            log("warm-up")
            for target in paths.values():
                run_client("big", target, "--calls", "2", "--size", "1000")
                _open_streams(target, 100, {}, None, 60)

            log(f"{s.streams} concurrent streams, one connection")
            data["streams"] = {}
            for name, target in paths.items():
                adm = admin if name == "sidecar" else None
                r = _open_streams(target, s.streams, watch[name], adm, 600)
                data["streams"][name] = r
                log(f"  {name}: opened {r['opened']} ok {r['completed_ok']} "
                    f"KiB/stream {r['kib_per_stream']}")  # fmt: skip

            log(f"{s.big_calls} unary calls of {s.big_size} bytes, {s.big_concurrency} at a time")
            data["big"] = {k: [] for k in paths}
            for r in range(s.repeats):
                for name in list(paths) if r % 2 == 0 else list(paths)[::-1]:
                    res, cpu = _cpu_run(
                        watch["sidecar"], run_client, "big", paths[name],
                        "--size", str(s.big_size), "--calls", str(s.big_calls),
                        "--concurrency", str(s.big_concurrency), timeout_s=300,
                    )  # fmt: skip
                    res["cpu_s"] = cpu
                    data["big"][name].append(res)
                    log(f"  [{r}] {name}: {res['calls_per_s']:.1f} calls/s "
                        f"{res['mib_per_s_each_way']:.1f} MiB/s, statuses {res['statuses']}")  # fmt: skip

            log(f"one Bidi stream for {s.bidi_seconds:g} s, window {s.bidi_window}")
            data["bidi"] = {k: [] for k in paths}
            for r in range(s.repeats):
                for name in list(paths) if r % 2 == 0 else list(paths)[::-1]:
                    res, cpu = _cpu_run(
                        watch["sidecar"], run_client, "bidi", paths[name],
                        "--seconds", str(s.bidi_seconds), "--window", str(s.bidi_window),
                        "--size", "100", timeout_s=s.bidi_seconds + 60,
                    )  # fmt: skip
                    res["cpu_s"] = cpu
                    data["bidi"][name].append(res)
                    log(f"  [{r}] {name}: {res['messages_per_s']:.0f} msg/s, {res['status']}")
            dead = [p.name for p in procs if not p.alive()]
            if dead:
                log(f"died during the run: {dead}")
                return 1
        finally:
            for p in procs:
                p.stop()
    m["loadavg_end"] = os.getloadavg()
    md = header("Streams and large messages", m) + _markdown(data, s)
    write(out, "streams-smoke" if s.smoke else "streams", md, data)
    return 0 if _all_ok(data) else 1


def _all_ok(data: dict[str, Any]) -> bool:
    ok = all(r["completed_ok"] == r["requested"] for r in data["streams"].values())
    ok &= all(
        set(x["statuses"]) == {"OK"} and not x["wrong_size"]
        for v in data["big"].values()
        for x in v
    )
    ok &= all(x["status"] == "OK" for v in data["bidi"].values() for x in v)
    return ok


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _markdown(data: dict[str, Any], s: StreamSettings) -> list[str]:
    md = [f"## {s.streams:,} concurrent Bidi streams on one connection", ""]
    rows = []
    for name, r in data["streams"].items():
        rss = r["rss_kib"]
        per = r["kib_per_stream"]
        sc = rss.get("sidecar")
        rows.append([
            name, r["requested"], r["opened"], r["completed_ok"],
            ", ".join(f"{k} {v}" for k, v in r["statuses"].items()) or "–",
            f"{r['open_s']:.1f} / {r['close_s']:.1f}",
            f"{sc['before'] / 1024:.0f} → {sc['open'] / 1024:.0f} → {sc['after'] / 1024:.0f}"
            if sc else "–",
            per.get("sidecar"),
            f"{per['echo']:.1f}",
            f"{r['cpu_s']['sidecar'] / max(1, r['opened']) * 1e6:.0f}" if sc else "–",
        ])  # fmt: skip
    md += table(
        ["path", "streams", "opened", "ended OK", "statuses", "open / close s",
         "sidecar RSS MiB (before → open → after)", "sidecar KiB per stream",
         "echo backend KiB per stream", "sidecar CPU µs per stream"],
        rows,
    )  # fmt: skip
    md += ["", "Target: ≤ 10 KB of sidecar RSS per in-flight stream.", ""]

    md += [f"## Unary calls with {s.big_size:,}-byte messages (echoed back)", ""]
    rows = []
    for name, runs in data["big"].items():
        mib = [x["statuses"].get("OK", 0) * 2 * x["size"] / MiB for x in runs]
        sc_cpu = [x["cpu_s"]["sidecar"] for x in runs]
        ec_cpu = [x["cpu_s"]["echo"] for x in runs]
        rows.append([
            name,
            _med([x["calls_per_s"] for x in runs]),
            _med([x["mib_per_s_each_way"] for x in runs]),
            f"{_med([x['p50_ms'] for x in runs]):.1f} / {_med([x['p99_ms'] for x in runs]):.1f}",
            f"{_med([c / max(1, x['statuses'].get('OK', 1)) * 1e3 for c, x in zip(sc_cpu, runs, strict=True)]):.1f}"
            if name == "sidecar" else "–",
            f"{_med([c / m * 1e3 for c, m in zip(sc_cpu, mib, strict=True)]):.1f}" if name == "sidecar" else "–",
            f"{_med([c / m * 1e3 for c, m in zip(ec_cpu, mib, strict=True)]):.1f}",
            ", ".join(sorted({k for x in runs for k in x["statuses"]})),
        ])  # fmt: skip
    md += table(
        ["path", "calls/s", "MiB/s each way", "p50 / p99 ms", "sidecar CPU ms per call",
         "sidecar CPU ms per MiB (both ways counted)", "echo CPU ms per MiB", "statuses"],
        rows,
    )  # fmt: skip
    md += ["", f"{s.big_concurrency} calls in flight, {s.big_calls} calls per run, "
           f"medians of {s.repeats} runs.", ""]  # fmt: skip

    md += [f"## One long-lived Bidi stream ({s.bidi_window} messages in flight, 100 B)", ""]
    rows = []
    for name, runs in data["bidi"].items():
        rows.append([
            name,
            _med([x["messages_per_s"] for x in runs]),
            f"{_med([x['cpu_s']['sidecar'] / max(1, x['received']) * 1e6 for x in runs]):.0f}"
            if name == "sidecar" else "–",
            f"{_med([x['cpu_s']['echo'] / max(1, x['received']) * 1e6 for x in runs]):.0f}",
            f"{_med([x['client_cpu_s'] / max(1, x['received']) * 1e6 for x in runs]):.0f}",
            ", ".join(sorted({x["status"] for x in runs})),
        ])  # fmt: skip
    md += table(
        ["path", "messages/s (each way)", "sidecar CPU µs per message", "echo CPU µs per message",
         "client CPU µs per message", "status"],
        rows,
    )  # fmt: skip
    md += ["", f"{s.bidi_seconds:g} s per run, medians of {s.repeats} runs.", ""]
    return md
