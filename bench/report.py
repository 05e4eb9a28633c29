"""Turning runs into medians, ratios, a markdown table and JSON. Pure (no I/O).

Medians over repeats, per case and metric. Ratios compare cases with the same
backend: req/s to `direct`; proxy CPU per request and added p50 latency (p50 at
the fixed rate minus direct's, for h2load's bursty `--rps` and for paced arrivals)
to `haproxy`.
"""

# ruff: noqa: RUF001  (the markdown table uses typographic dashes and signs on purpose)
from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

from bench.runner import Case, Run, Settings

LATENCY_KINDS = ("rate", "paced")  # h2load --rps (bursts), evenly paced: same req/s


def _med(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(case: Case) -> dict[str, Any]:
    """Medians of one case's runs (saturation and fixed-rate runs kept apart)."""
    sat = [r for r in case.runs if r.kind in ("saturation", "smoke")]
    rate = [r for r in case.runs if r.kind == "rate"]

    def cpu(runs: list[Run]) -> dict[str, float | None]:
        names = runs[0].proxy_cpu_us if runs else {}
        return {n: _med([r.proxy_cpu_us[n] for r in runs]) for n in names}

    s: dict[str, Any] = {
        "case": case.name,
        "path": case.path,
        "backend": case.backend,
        "status": case.status,
        "reason": case.reason,
        "repeats": len(sat),
        "response_data_bytes": case.response_data_bytes,
        "requests_checked": sum(r.h2load.done for r in case.runs),
    }
    if not sat:
        return s
    rps = [r.h2load.rps for r in sat]
    s |= {
        "sat_rps": _med(rps),
        "sat_rps_min": min(rps),
        "sat_rps_max": max(rps),
        "sat_p50_ms": _med([r.h2load.p50_ms for r in sat]),  # type: ignore[misc]
        "sat_p99_ms": _med([r.h2load.p99_ms for r in sat]),  # type: ignore[misc]
        "proxy_cpu_us": cpu(sat),
        "proxy_cpu_us_total": _med([sum(r.proxy_cpu_us.values()) for r in sat]),
        "proxy_cpu_us_at_rate": _med([sum(r.proxy_cpu_us.values()) for r in rate]),
        "proxy_rss_mib": {
            n: max(r.proxy_rss_kib[n] for r in case.runs) / 1024 for n in sat[0].proxy_rss_kib
        },
        "proxy_idle_rss_mib": {p.name: p.idle_rss_kib / 1024 for p in case.proxies},
        "backend_cpu_us": _med([r.backend_cpu_us for r in sat]),
        "backend_util": _med([r.backend_util for r in sat]),
        "proxy_util": _med([r.proxy_util for r in sat]),
        "loadgen_util": _med([r.loadgen_util for r in sat]),
    }
    for kind in LATENCY_KINDS:
        runs = [r for r in case.runs if r.kind == kind]
        if runs:
            s |= {
                f"{kind}_rps": _med([r.h2load.rps for r in runs]),
                f"{kind}_p50_ms": _med([r.h2load.p50_ms for r in runs]),  # type: ignore[misc]
                f"{kind}_p99_ms": _med([r.h2load.p99_ms for r in runs]),  # type: ignore[misc]
            }
    return s


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Ratios to `direct` and `haproxy` with the same backend, where both ran."""
    by = {(r["path"], r["backend"]): r for r in rows}
    for r in rows:
        direct, hap = by.get(("direct", r["backend"])), by.get(("haproxy", r["backend"]))
        if direct and direct.get("sat_rps") and r.get("sat_rps"):
            r["rps_vs_direct"] = r["sat_rps"] / direct["sat_rps"]
        if (
            hap
            and r["path"] != "direct"
            and hap.get("proxy_cpu_us_total")
            and r.get("proxy_cpu_us_total") is not None
        ):
            r["cpu_vs_haproxy"] = r["proxy_cpu_us_total"] / hap["proxy_cpu_us_total"]
        for kind in LATENCY_KINDS:
            p50, added = f"{kind}_p50_ms", f"{kind}_added_p50_ms"
            if direct is None or direct.get(p50) is None or r.get(p50) is None:
                continue
            r[added] = r[p50] - direct[p50]
            if hap and r["path"] != "direct" and hap.get(p50) is not None:
                hap_added = hap[p50] - direct[p50]
                if hap_added > 0:
                    r[f"{kind}_added_p50_vs_haproxy"] = r[added] / hap_added


def _f(value: Any, fmt: str, dash: str = "–") -> str:
    return dash if value is None else format(value, fmt)


def _short_rate(row: dict[str, Any], kind: str, settings: Settings) -> str:
    """Flag a latency run that could not keep the fixed rate: its latency is saturated too.
    (Not paced runs: the script fixes when each request goes, and h2load's req/s for them
    counts its start-up time too.)"""
    achieved = row.get(f"{kind}_rps")
    if kind == "paced" or achieved is None or achieved >= 0.95 * settings.rate:
        return ""
    return f" (only {achieved:,.0f}/s)"


def _latency(row: dict[str, Any], kind: str, settings: Settings) -> str:
    """p50 / p99, added p50 and its ratio to HAProxy's, for one latency kind."""
    return (
        f"| {_f(row.get(f'{kind}_p50_ms'), '.2f')} / {_f(row.get(f'{kind}_p99_ms'), '.2f')}"
        f"{_short_rate(row, kind, settings)} "
        f"| {_f(row.get(f'{kind}_added_p50_ms'), '+.2f')} "
        f"| {_f(row.get(f'{kind}_added_p50_vs_haproxy'), '.1f')} "
    )


def markdown_table(rows: list[dict[str, Any]], settings: Settings) -> str:
    """One row per case. Latency at the fixed rate twice: "bursts" as h2load's `--rps`
    sends it, "paced" evenly spaced on one connection."""
    head = (
        f"| case | req/s (sat, min–max) | × direct | p50 / p99 ms (sat) "
        f"| p50 / p99 ms @{settings.rate}/s bursts | +p50 ms | × HAProxy +p50 "
        f"| p50 / p99 ms @{settings.rate}/s paced | +p50 ms | × HAProxy +p50 "
        f"| proxy CPU µs/req (sat / @rate) | × HAProxy CPU | proxy RSS MiB (idle → after) "
        f"| backend µs/req, % core | h2load % core |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if r["status"] != "ok" or "sat_rps" not in r:
            lines.append(f"| {r['case']} | {r['status']}: {r['reason'][:160]} |" + " |" * 13)
            continue
        cpu = r["proxy_cpu_us"]
        cpu_txt = _f(r.get("proxy_cpu_us_total"), ".1f") if cpu else "–"
        if cpu and r.get("proxy_cpu_us_at_rate") is not None:
            cpu_txt += f" / {r['proxy_cpu_us_at_rate']:.1f}"
        if len(cpu) > 1:
            cpu_txt += (
                " (" + " + ".join(f"{n.rsplit('-', 1)[-1]} {v:.1f}" for n, v in cpu.items()) + ")"
            )
        many = len(r["proxy_rss_mib"]) > 1
        rss = (
            ", ".join(
                (f"{n.rsplit('-', 1)[-1]} " if many else "")
                + f"{_f(r['proxy_idle_rss_mib'].get(n), '.0f', '?')} → {v:.0f}"
                for n, v in r["proxy_rss_mib"].items()
            )
            or "–"
        )
        lines.append(
            f"| {r['case']} "
            f"| {r['sat_rps']:,.0f} ({r['sat_rps_min']:,.0f}–{r['sat_rps_max']:,.0f}) "
            f"| {_f(r.get('rps_vs_direct'), '.2f')} "
            f"| {_f(r.get('sat_p50_ms'), '.2f')} / {_f(r.get('sat_p99_ms'), '.2f')} "
            f"{_latency(r, 'rate', settings)}{_latency(r, 'paced', settings)}"
            f"| {cpu_txt} | {_f(r.get('cpu_vs_haproxy'), '.1f')} | {rss} "
            f"| {_f(r.get('backend_cpu_us'), '.1f')}, {_f(r.get('backend_util'), '.0%')} "
            f"| {_f(r.get('loadgen_util'), '.0%')} |"
        )
    return "\n".join(lines)


def backend_check(rows: list[dict[str, Any]]) -> list[str]:
    """Say, per proxied case, whether the backend could have been the bottleneck."""
    notes = []
    for r in rows:
        if r["status"] != "ok" or r["path"] == "direct" or r.get("backend_util") is None:
            continue
        util = r["backend_util"]
        verdict = "possibly the bottleneck" if util > 0.85 else "not the bottleneck"
        notes.append(
            f"- {r['case']}: backend busy {util:.0%} of one core at saturation "
            f"({r['backend_cpu_us']:.1f} µs/req): {verdict}; proxies {r['proxy_util']:.0%}, "
            f"h2load {r['loadgen_util']:.0%} of a core"
        )
    return notes


def to_json(cases: list[Case], rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    runs = []
    for case in cases:
        for run in case.runs:
            d = asdict(run)
            d["case"] = case.name
            runs.append(d)
    return {"meta": meta, "summary": rows, "runs": runs}
