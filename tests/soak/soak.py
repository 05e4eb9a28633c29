"""The soak: mixed traffic through a sidecar pair for a while, the sidecars' RSS, open fds
and asyncio tasks sampled every second, and a check that none of them grows once warm.

Does I/O (the chaos harness's real processes: BIND 9, echo apps, their inbound sidecars
registering in DNS, a caller's outbound sidecar discovering them by SRV). What runs:

- traffic from this process at a fixed rate, through the caller sidecar to the instances'
  inbound sidecars: the four call kinds (unary, server, client and bidi streams), calls
  cancelled mid-stream, calls whose deadline expires at the app;
- breakers tripping: every `TRIP_EVERY_S` one instance fails every call for a few seconds
  (its knobs), so the caller's breaker ejects it, then it recovers;
- endpoints churning in DNS: every `CHURN_EVERY_S` a new instance registers and the oldest
  of the churned ones drains, deregisters and stops.

The pinned instance (never churned) and the caller are sampled: `/proc/<pid>` for RSS and
open fds, `sidecar_asyncio_tasks` from `/metrics`. After `warm-up` (a fifth of the run, at
least 10 s) each series' least-squares slope must stay under its bound (BOUNDS, per
minute): a leak of one connection, task or kilobyte per call at this rate would be far
above them. Results go to results/soak/: samples.jsonl, summary.json and soak.png
(matplotlib, the `plots` extra, imported only to draw)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from meshtest.echo.v1 import echo_pb2
from tests.chaos.harness import ECHO, Instance, Mesh, SidecarProc, http
from tests.chaos.scenario import ECHO_UPSTREAM

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "soak"
MiB = 1024 * 1024
RATE = 40.0  # calls started per second
CHURN_EVERY_S = 15.0
TRIP_EVERY_S = 20.0
TRIP_FOR_S = 4.0
# the most each series may grow per minute once warm (least-squares slope)
BOUNDS = {"rss_mib": 3.0, "fds": 3.0, "tasks": 5.0}
UPSTREAM: dict[str, Any] = {**ECHO_UPSTREAM, "timeout_ms": 2000}


@dataclass
class Sample:
    t: float
    who: str
    rss_mib: float
    fds: int
    tasks: int


@dataclass
class Soak:
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def warmup_s(self) -> float:
        return max(10.0, self.duration_s / 5)


def _proc_figures(pid: int) -> tuple[float, int]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _tasks(sidecar: SidecarProc) -> int:
    status, body = http("GET", sidecar.url("/metrics"))
    found = re.search(r"^sidecar_asyncio_tasks (\S+)$", body.decode(), re.MULTILINE)
    assert status == 200 and found, "sidecar_asyncio_tasks not served"
    return int(float(found.group(1)))


def _sampler(
    soak: Soak, watched: dict[str, SidecarProc], start: float, stop: threading.Event
) -> None:
    while not stop.wait(1.0):
        now = time.monotonic() - start
        for who, sidecar in watched.items():
            try:
                rss, fds = _proc_figures(sidecar.proc.pid)
                soak.samples.append(Sample(now, who, rss, fds, _tasks(sidecar)))
            except (OSError, AssertionError) as exc:
                soak.events.append((now, f"sample of {who} failed: {exc}"))


async def _one_call(channel: grpc.aio.Channel, kind: str) -> str:
    """One call of `kind`; its outcome (a status name, or what the test expected)."""
    ser = echo_pb2.EchoRequest.SerializeToString
    de = echo_pb2.EchoResponse.FromString
    try:
        if kind == "unary":
            call = channel.unary_unary(f"/{ECHO}/Unary", ser, de)
            await call(echo_pb2.EchoRequest(payload=b"soak" * 16), timeout=2)
        elif kind == "server":
            stream = channel.unary_stream(f"/{ECHO}/ServerStream", ser, de)
            async for _ in stream(echo_pb2.EchoRequest(payload=b"s", count=5), timeout=2):
                pass
        elif kind == "client":
            client = channel.stream_unary(f"/{ECHO}/ClientStream", ser, de)
            requests = [echo_pb2.EchoRequest(payload=b"c" * 100) for _ in range(5)]
            await client(iter(requests), timeout=2)
        elif kind == "bidi":
            bidi = channel.stream_stream(f"/{ECHO}/Bidi", ser, de)
            call = bidi(timeout=2)
            for _ in range(3):
                await call.write(echo_pb2.EchoRequest(payload=b"b"))
                await call.read()
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass
        elif kind == "cancel":
            stream = channel.unary_stream(f"/{ECHO}/ServerStream", ser, de)
            call = stream(echo_pb2.EchoRequest(payload=b"x", count=50, delay_ms=50), timeout=5)
            await call.read()
            call.cancel()
            return "cancelled (as meant)"
        else:  # "deadline": the app answers after the deadline
            call = channel.unary_unary(f"/{ECHO}/Unary", ser, de)
            await call(echo_pb2.EchoRequest(payload=b"d", delay_ms=400), timeout=0.1)
        return "OK"
    except grpc.aio.AioRpcError as err:
        return err.code().name
    except asyncio.CancelledError:
        return "cancelled (as meant)"
    except Exception as exc:  # a bug of this client: counted, so the test shows it
        return f"client error {type(exc).__name__}"


KINDS = ["unary"] * 10 + ["server", "client", "bidi"] * 2 + ["cancel", "deadline"]


async def _traffic(soak: Soak, caller: SidecarProc, start: float) -> None:
    rng = random.Random(7)
    outcomes: dict[str, Counter[str]] = {}
    async with grpc.aio.insecure_channel(caller.listen("outbound")) as channel:
        tasks: set[asyncio.Task[None]] = set()

        async def run(kind: str) -> None:
            outcome = await _one_call(channel, kind)
            soak.outcomes[f"{kind}: {outcome}"] += 1
            outcomes.setdefault(kind, Counter())[outcome] += 1

        n = 0
        while (now := time.monotonic() - start) < soak.duration_s:
            while n < now * RATE and len(tasks) < 200:  # bounded in flight
                task = asyncio.create_task(run(rng.choice(KINDS)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.sleep(0.01)
        if tasks:
            await asyncio.wait(tasks, timeout=10)


def _churn(
    soak: Soak, mesh: Mesh, churned: list[Instance], start: float, stop: threading.Event
) -> None:
    """New instances register, the oldest churned one drains and leaves; one trips."""
    next_churn = CHURN_EVERY_S
    next_trip = TRIP_EVERY_S / 2
    while not stop.wait(0.5):
        now = time.monotonic() - start
        if now >= soak.duration_s - 5:
            return
        if now >= next_trip and churned:
            victim = churned[-1]
            asyncio.run(victim.set_knobs(fail_ratio=1.0))
            soak.events.append((now, f"{victim.name} fails every call"))
            time.sleep(TRIP_FOR_S)
            asyncio.run(victim.set_knobs(fail_ratio=0.0))
            soak.events.append((time.monotonic() - start, f"{victim.name} recovered"))
            next_trip += TRIP_EVERY_S
        if now >= next_churn:
            fresh = mesh.add_instance("a")
            churned.append(fresh)
            soak.events.append((time.monotonic() - start, f"{fresh.name} registered"))
            if len(churned) > 2:
                old = churned.pop(0)
                old.drain()
                old.stop()
                soak.events.append((time.monotonic() - start, f"{old.name} drained and stopped"))
            next_churn += CHURN_EVERY_S


def _breaker_trips(caller: SidecarProc) -> int:
    """Times the caller's breakers opened (sidecar_breaker_transitions_total, to open)."""
    _, body = http("GET", caller.url("/metrics"))
    found = re.findall(
        r'^sidecar_breaker_transitions_total\{[^}]*to="open"[^}]*\} (\S+)$', body.decode(), re.M
    )
    return int(sum(float(v) for v in found))


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def slopes(soak: Soak) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for who in sorted({s.who for s in soak.samples}):
        warm = [s for s in soak.samples if s.who == who and s.t >= soak.warmup_s]
        out[who] = {
            series: round(slope_per_minute([(s.t, float(getattr(s, series))) for s in warm]), 3)
            for series in BOUNDS
        }
    return out


def plot(soak: Soak, path: Path) -> None:
    import matplotlib  # the `plots` extra: only when drawing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for ax, series, label in zip(
        axes, BOUNDS, ("RSS, MiB", "open fds", "asyncio tasks"), strict=True
    ):
        for who in sorted({s.who for s in soak.samples}):
            pts = [(s.t, getattr(s, series)) for s in soak.samples if s.who == who]
            ax.plot([t for t, _ in pts], [v for _, v in pts], label=who)
        ax.axvspan(0, soak.warmup_s, color="0.9", label="warm-up")
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize="small")
    axes[-1].set_xlabel("seconds")
    fig.suptitle(f"soak: {soak.duration_s:.0f} s of mixed traffic, {RATE:.0f} calls/s")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(workdir: Path, duration_s: float) -> tuple[Soak, dict[str, Any]]:
    """The whole soak; returns it and its summary (also written to results/soak/)."""
    soak = Soak(duration_s)
    mesh = Mesh(workdir)
    try:
        pinned = mesh.add_instance("a")
        churned = [mesh.add_instance("a")]
        caller = mesh.add_caller("a", {"echo": UPSTREAM})
        mesh.wait_endpoints(caller, "echo", 2)
        assert pinned.sidecar is not None
        watched = {"caller": caller, "instance": pinned.sidecar}
        stop = threading.Event()
        start = time.monotonic()
        threads = [
            threading.Thread(target=_sampler, args=(soak, watched, start, stop), daemon=True),
            threading.Thread(target=_churn, args=(soak, mesh, churned, start, stop), daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            asyncio.run(_traffic(soak, caller, start))
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        trips = _breaker_trips(caller)
    finally:
        mesh.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "samples.jsonl").open("w") as out:
        for s in soak.samples:
            out.write(json.dumps(s.__dict__) + "\n")
    summary = {
        "duration_s": duration_s,
        "warmup_s": soak.warmup_s,
        "rate": RATE,
        "calls": sum(soak.outcomes.values()),
        "outcomes": dict(sorted(soak.outcomes.items())),
        "events": soak.events,
        "breaker_trips": trips,
        "slopes_per_minute": slopes(soak),
        "bounds_per_minute": BOUNDS,
    }
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(soak, RESULTS / "soak.png")
    return soak, summary
