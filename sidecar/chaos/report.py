"""The results of a chaos run: the console summary per phase, `summary.json`,
`timeline.jsonl` (one object per second), `calls.jsonl`, `clusters.jsonl`, the
timeline PNG and JUnit XML (one test case per expectation).

Does I/O (writes files). matplotlib is imported only to draw, and is optional (the
`plots` extra): without it the PNG is skipped with one line saying what to install,
and everything else is still written.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar.chaos.measure import Call, Phase, Sample, Verdict, per_second, summarize

PLOTS_MISSING = "timeline.png skipped: matplotlib is missing (pip install 'grpc-sidecar[plots]')"


def phase_rows(phase_list: Sequence[Phase], calls: Sequence[Call]) -> list[dict[str, Any]]:
    rows = []
    for phase in phase_list:
        s = summarize(phase.calls(calls))
        rows.append({"phase": phase.name, "from_s": round(phase.start, 2),
                     "to_s": round(phase.end, 2), **s})  # fmt: skip
    return rows


def console(
    name: str, rows: Sequence[dict[str, Any]], verdicts: Sequence[Verdict], notes: Sequence[str]
) -> str:
    """The text printed at the end of a run."""
    out = [f"chaos scenario {name}: summary per phase"]
    out.append(f"  {'phase':<28} {'from-to s':>11} {'calls':>6} {'ok':>8} {'p50 ms':>7} "
               f"{'p99 ms':>7}  failures")  # fmt: skip
    for r in rows:
        fails = ", ".join(f"{k} {v}" for k, v in r["status"].items() if k != "OK") or "-"
        span = f"{r['from_s']:.1f}-{r['to_s']:.1f}"
        out.append(f"  {r['phase'][:28]:<28} {span:>11} {r['count']:>6} "
                   f"{r['success_ratio']:>8.4f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}  {fails}")  # fmt: skip
    out.append("expectations:")
    for v in verdicts:
        mark = "held  " if v.held else "FAILED"
        out.append(f"  {mark} [{v.phase}] {v.name}: {v.measured}"
                   + (f" ({v.detail})" if v.detail else ""))  # fmt: skip
    out += [f"note: {n}" for n in notes]
    failed = sum(not v.held for v in verdicts)
    out.append(
        f"{len(verdicts) - failed} of {len(verdicts)} expectations held"
        + ("" if not failed else f"; {failed} failed")
    )
    return "\n".join(out)


def junit(name: str, verdicts: Sequence[Verdict], elapsed_s: float) -> bytes:
    """JUnit XML: one <testcase> per expectation, failed ones with a <failure>."""
    failures = sum(not v.held for v in verdicts)
    suites = ET.Element("testsuites", name="sidecar chaos", tests=str(len(verdicts)),
                        failures=str(failures), time=f"{elapsed_s:.3f}")  # fmt: skip
    suite = ET.SubElement(suites, "testsuite", name=name, tests=str(len(verdicts)),
                          failures=str(failures), errors="0", time=f"{elapsed_s:.3f}")  # fmt: skip
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"{name}.{v.phase}", name=v.name)
        ET.SubElement(case, "system-out").text = v.measured
        if not v.held:
            failure = ET.SubElement(case, "failure", message=f"{v.name}: {v.measured}")
            failure.text = f"[{v.phase}] {v.name}: measured {v.measured}. {v.detail}".strip()
    ET.indent(suites)
    return bytes(ET.tostring(suites, encoding="utf-8", xml_declaration=True))


def write(
    folder: Path,
    name: str,
    calls: Sequence[Call],
    samples: Sequence[Sample],
    upstream: str,
    events: Sequence[tuple[float, str]],
    summary: dict[str, Any],
    names: dict[str, str] | None = None,
) -> list[str]:
    """Write every file but the JUnit one; notes for the console (a skipped plot).
    `names`: instance name per endpoint address (the per-second attempts use them)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = per_second(calls, samples, upstream)
    for row in rows:
        if "attempts" in row and names:
            row["attempts"] = {names.get(a, a): n for a, n in row["attempts"].items()}
    with (folder / "timeline.jsonl").open("w") as out:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        for t, label in events:
            out.write(json.dumps({"t": round(t, 3), "event": label}) + "\n")
    with (folder / "calls.jsonl").open("w") as out:
        for c in calls:
            out.write(json.dumps(c.to_json(), sort_keys=True) + "\n")
    with (folder / "clusters.jsonl").open("w") as out:
        for t, data in samples:
            out.write(json.dumps({"t": round(t, 3), "clusters": data}, sort_keys=True) + "\n")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    try:
        plot(folder / "timeline.png", name, rows, events)
    except ImportError:
        return [PLOTS_MISSING]
    return []


def plot(
    path: Path, title: str, rows: Sequence[dict[str, Any]], events: Sequence[tuple[float, str]]
) -> None:
    """Calls per second by status, p50/p99, and each endpoint's attempts, faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 7.8), sharex=True)
    xs = [r["second"] for r in rows]
    ax = axes[0]
    ax.plot(xs, [r["ok"] for r in rows], label="OK", color="tab:green")
    for status in sorted({k for r in rows for k in r["failures"]}):
        ax.plot(xs, [r["failures"].get(status, 0) for r in rows], label=status)
    ax.set_ylabel("calls / s")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    ax.plot(xs, [r["p50_ms"] for r in rows], label="p50")
    ax.plot(xs, [r["p99_ms"] for r in rows], label="p99")
    ax.set_ylabel("latency ms")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    endpoints = sorted({a for r in rows for a in r.get("attempts", {})})
    for address in endpoints:
        ax.plot(xs, [r.get("attempts", {}).get(address, 0) for r in rows], label=address)
    if endpoints:
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax.set_ylabel("attempts / s per endpoint")
    for ax in axes:
        for t, _ in events:
            ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
    for t, label in events:
        axes[0].annotate(label, (t, 0.02), xycoords=("data", "axes fraction"), fontsize=7,
                         rotation=90, va="bottom")  # fmt: skip
    axes[-1].set_xlabel("seconds since the load started")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
