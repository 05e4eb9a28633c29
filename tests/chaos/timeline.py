"""Per-second timelines, summaries and plots of a chaos run; the measures the asserts use.

The measures are the chaos engine's (sidecar/chaos/measure.py), re-exported for the
scenarios written in Python (the slow tier). Pure apart from `write()`, which writes `results/chaos/<scenario>/timeline.jsonl`
(one JSON object per second of start time: count, ok, failures by status and by
`x-sidecar-error`, p50/p99 latency, share per instance, attempts per endpoint from
the caller's /clusters), `summary.json`, `calls.jsonl` (every call) and
`clusters.jsonl` (the caller's /clusters samples) and `timeline.png` (matplotlib, Agg
backend).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar.chaos.measure import (  # the engine's measures, one copy
    attempts_per_second,
    eject_time,
    moved_time,
    per_second,
    percentile,
    share,
    summarize,
)
from tests.chaos.load import Call

__all__ = [
    "attempts_per_second", "eject_time", "moved_time", "per_second", "percentile", "share",
    "summarize",
]  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "chaos"


def last_answer(calls: Sequence[Call], instance: str) -> float | None:
    """Start time of the last call `instance` answered successfully."""
    ts = [c.t for c in calls if c.served_by == instance and c.status == "OK"]
    return max(ts) if ts else None


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
