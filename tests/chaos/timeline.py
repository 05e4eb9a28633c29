"""Per-second timelines, summaries and plots of a chaos run; the measures the asserts use.

Pure apart from `write()`, which writes `results/chaos/<scenario>/timeline.jsonl`
(one JSON object per second of start time: count, ok, failures by status and by
`x-sidecar-error`, p50/p99 latency, share per instance, attempts per endpoint from
the caller's /clusters), `summary.json`, `calls.jsonl` (every call) and
`clusters.jsonl` (the caller's /clusters samples) and `timeline.png` (matplotlib, Agg
backend).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.chaos.load import Call

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "chaos"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def summarize(calls: Iterable[Call]) -> dict[str, Any]:
    calls = list(calls)
    ok = [c for c in calls if c.status == "OK"]
    lat = [c.latency * 1000 for c in calls]
    served = Counter(c.served_by for c in ok if c.served_by)
    return {
        "count": len(calls),
        "ok": len(ok),
        "success_ratio": round(len(ok) / len(calls), 5) if calls else 0.0,
        "status": dict(sorted(Counter(c.status for c in calls).items())),
        "sidecar_errors": dict(sorted(Counter(c.error for c in calls if c.error).items())),
        "p50_ms": round(percentile(lat, 0.5), 2),
        "p99_ms": round(percentile(lat, 0.99), 2),
        "max_ms": round(max(lat, default=0.0), 2),
        "share": {k: round(v / len(ok), 4) for k, v in sorted(served.items())} if ok else {},
    }


def attempts_per_second(
    samples: Sequence[tuple[float, Any]], upstream: str
) -> dict[int, dict[str, int]]:
    """From /clusters samples: attempts each endpoint got in each second (failed ones too)."""
    out: dict[int, dict[str, int]] = defaultdict(dict)
    last: dict[str, int] = {}
    for t, data in samples:
        for ep in (data.get(upstream) or {}).get("endpoints", []):
            addr, n = ep["address"], int(ep.get("requests", 0))
            if addr in last and n >= last[addr]:
                sec = int(t)
                out[sec][addr] = out[sec].get(addr, 0) + n - last[addr]
            last[addr] = n
    return dict(out)


def per_second(
    calls: Sequence[Call],
    samples: Sequence[tuple[float, Any]] = (),
    upstream: str = "",
) -> list[dict[str, Any]]:
    buckets: dict[int, list[Call]] = defaultdict(list)
    for c in calls:
        buckets[int(c.t)].append(c)
    attempts = attempts_per_second(samples, upstream) if samples else {}
    rows = []
    for sec in range(0, max(buckets, default=-1) + 1):
        s = summarize(buckets.get(sec, []))
        row = {
            "second": sec,
            "count": s["count"],
            "ok": s["ok"],
            "failures": {k: v for k, v in s["status"].items() if k != "OK"},
            "sidecar_errors": s["sidecar_errors"],
            "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"],
            "share": s["share"],
        }
        if attempts:
            row["attempts"] = attempts.get(sec, {})
        rows.append(row)
    return rows


def eject_time(
    samples: Sequence[tuple[float, Any]], upstream: str, address: str, since: float
) -> float | None:
    """Seconds from `since` until the caller stopped offering `address` ordinary traffic:
    gone from the cluster, or not healthy (breaker open/half-open, health check failing)."""
    for t, data in samples:
        if t < since:
            continue
        eps = {e["address"]: e for e in (data.get(upstream) or {}).get("endpoints", [])}
        ep = eps.get(address)
        if ep is None or not ep.get("healthy", True):
            return round(t - since, 3)
    return None


def moved_time(
    samples: Sequence[tuple[float, Any]],
    upstream: str,
    address: str,
    since: float,
    quiet_s: float = 2.0,
) -> float | None:
    """Seconds from `since` until the caller stopped sending `address` traffic: the first
    sample from which on the endpoint is gone, or marked not healthy, or gets no attempt
    for `quiet_s` but a breaker's probe (one per sample while its breaker is not closed).
    None: it kept getting ordinary traffic (or the run ended too soon to tell)."""
    points: list[tuple[float, int | None, bool, bool]] = []
    for t, data in samples:
        eps = {e["address"]: e for e in (data.get(upstream) or {}).get("endpoints", [])}
        ep = eps.get(address)
        n = None if ep is None else int(ep.get("requests", 0))
        healthy = ep is not None and ep.get("healthy", True)
        closed = ep is None or ep.get("breaker", "closed") == "closed"
        points.append((t, n, healthy, closed))
    end = points[-1][0] if points else 0.0
    for i, (t, n, healthy, _) in enumerate(points):
        if t < since:
            continue
        if n is None or not healthy:
            return round(t - since, 3)
        if end - t < min(quiet_s, 1.0):
            return None  # too close to the end of the run to tell
        prev, quiet = n, True
        for u, m, _, closed in points[i + 1 :]:
            if u > t + quiet_s or m is None:
                break
            if m - prev > (0 if closed else 1):
                quiet = False
                break
            prev = m
        if quiet:
            return round(t - since, 3)
    return None


def last_answer(calls: Sequence[Call], instance: str) -> float | None:
    """Start time of the last call `instance` answered successfully."""
    ts = [c.t for c in calls if c.served_by == instance and c.status == "OK"]
    return max(ts) if ts else None


def share(calls: Sequence[Call], instance: str, start: float, end: float) -> float:
    """Share of successful calls started in [start, end) that `instance` answered."""
    ok = [c for c in calls if start <= c.t < end and c.status == "OK"]
    return sum(c.served_by == instance for c in ok) / len(ok) if ok else 0.0


def write(
    scenario: str,
    calls: Sequence[Call],
    *,
    samples: Sequence[tuple[float, Any]] = (),
    upstream: str = "",
    events: Sequence[tuple[float, str]] = (),
    extra: dict[str, Any] | None = None,
    series: dict[str, Sequence[tuple[float, float]]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write timeline, calls, summary and plot; return the folder and the summary."""
    folder = RESULTS / scenario
    folder.mkdir(parents=True, exist_ok=True)
    rows = per_second(calls, samples, upstream)
    with (folder / "timeline.jsonl").open("w") as out:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
    with (folder / "calls.jsonl").open("w") as out:
        for c in calls:
            out.write(json.dumps(c.to_json(), sort_keys=True) + "\n")
    summary = {
        "scenario": scenario,
        **summarize(calls),
        "events": [{"t": round(t, 3), "event": e} for t, e in events],
        **(extra or {}),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    with (folder / "clusters.jsonl").open("w") as out:
        for t, data in samples:
            out.write(json.dumps({"t": round(t, 3), "clusters": data}, sort_keys=True) + "\n")
    plot(folder / "timeline.png", scenario, rows, events, series or {})
    return folder, summary


def plot(
    path: Path,
    title: str,
    rows: Sequence[dict[str, Any]],
    events: Sequence[tuple[float, str]],
    series: dict[str, Sequence[tuple[float, float]]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 4 if series else 3
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.6 * n), sharex=True)
    xs = [r["second"] for r in rows]
    ax = axes[0]
    ax.plot(xs, [r["ok"] for r in rows], label="ok", color="tab:green")
    statuses = sorted({k for r in rows for k in r["failures"]})
    for st in statuses:
        ax.plot(xs, [r["failures"].get(st, 0) for r in rows], label=st)
    ax.set_ylabel("calls / s")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    ax.plot(xs, [r["p50_ms"] for r in rows], label="p50")
    ax.plot(xs, [r["p99_ms"] for r in rows], label="p99")
    ax.set_ylabel("latency ms")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    names = sorted({k for r in rows for k in r["share"]})
    if names:
        ax.stackplot(
            xs, [[r["share"].get(k, 0.0) for r in rows] for k in names], labels=names, alpha=0.8
        )
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.set_ylabel("share of ok")
    ax.set_ylim(0, 1)
    if series:
        ax = axes[3]
        for label, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes:
        for t, _label in events:
            ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
    for t, label in events:
        axes[0].annotate(label, (t, 0), fontsize=7, rotation=90, va="bottom")
    axes[-1].set_xlabel("seconds since load started")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
