"""What a chaos run measured: per-call records, phases, per-second rows, expectations.

Pure (no I/O): records and admin samples in, numbers and verdicts out. The per-second
rows and the "traffic moved" measure are the ones the project's own chaos tier used
(tests/chaos/timeline.py re-exports them).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sidecar.chaos.spec import Expect, Scenario, SteadyState

# statuses that say clearly what happened: a failure with one of these is "clear"
CLEAR_FAILURES = frozenset(
    {
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "CANCELLED",
        "ABORTED",
        "FAILED_PRECONDITION",
        "INTERNAL",
    }
)


@dataclass(slots=True)
class Call:
    t: float  # start, seconds since the load started
    latency: float = 0.0  # seconds
    status: str = "OK"  # a gRPC code name, or HUNG (outlived its deadline + slack)
    error: str | None = None  # x-sidecar-error
    served_by: str | None = None  # x-served-by, when the app says
    deadline: float = 0.0  # seconds the call was given

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Sample = tuple[float, Any]  # (t, a parsed /clusters answer)


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


def attempts_per_second(samples: Sequence[Sample], upstream: str) -> dict[int, dict[str, int]]:
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
    calls: Sequence[Call], samples: Sequence[Sample] = (), upstream: str = ""
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
    samples: Sequence[Sample], upstream: str, address: str, since: float
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
    samples: Sequence[Sample], upstream: str, address: str, since: float, quiet_s: float = 2.0
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


def share(calls: Sequence[Call], instance: str, start: float, end: float) -> float:
    """Share of successful calls started in [start, end) that `instance` answered."""
    ok = [c for c in calls if start <= c.t < end and c.status == "OK"]
    return sum(c.served_by == instance for c in ok) / len(ok) if ok else 0.0


def success_ratio(calls: Sequence[Call]) -> float:
    return sum(c.status == "OK" for c in calls) / len(calls) if calls else 1.0


# -- phases and expectations --------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start: float
    end: float
    fault: int | None = None  # index into scenario.faults; None: the steady phase

    def calls(self, calls: Sequence[Call]) -> list[Call]:
        return [c for c in calls if self.start <= c.t < self.end]


def phases(
    scenario: Scenario, injected: Sequence[tuple[int, float, str]], end: float
) -> list[Phase]:
    """The steady phase (warm-up to the first fault), then one per injected fault (from
    its time to the next fault's, or the end). `injected`: (fault index, time, what was
    done, e.g. `kill cart-lon3-0`)."""
    first = injected[0][1] if injected else end
    out = [Phase("steady", min(scenario.steady_state.warmup_s, first), first)]
    for k, (i, t, done) in enumerate(injected):
        duration = scenario.faults[i].duration_s
        if duration is not None:  # a fault undone after a while: its phase is that while
            stop = min(end, t + duration)
        else:
            stop = injected[k + 1][1] if k + 1 < len(injected) else end
        out.append(Phase(f"{i}: {scenario.faults[i].name or done}", t, stop, i))
    return out


@dataclass
class Verdict:
    phase: str
    name: str  # e.g. success_ratio >= 0.99
    held: bool
    measured: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Evidence:
    """What the runner saw, besides the calls: for `traffic_moved_within_s`."""

    samples: Sequence[Sample] = ()
    upstream: str = ""
    victims: dict[int, str] = field(default_factory=dict)  # fault index -> inbound address
    victim_names: dict[int, str] = field(default_factory=dict)
    added: dict[int, list[str]] = field(default_factory=dict)  # scale_out -> addresses


def attempt_share(
    samples: Sequence[Sample], upstream: str, address: str, start: float, end: float
) -> float | None:
    """`address`'s share of the caller's attempts (failed ones too) in [start, end)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for t, data in samples:
        if not start <= t < end:
            continue
        for ep in (data.get(upstream) or {}).get("endpoints", []):
            first.setdefault(ep["address"], int(ep.get("requests", 0)))
            last[ep["address"]] = int(ep.get("requests", 0))
    total = sum(last[a] - first[a] for a in last)
    return (last.get(address, 0) - first.get(address, 0)) / total if total > 0 else None


def endpoint_counts(samples: Sequence[Sample], upstream: str) -> list[tuple[float, int]]:
    return [(t, len((d.get(upstream) or {}).get("endpoints", []))) for t, d in samples]


def seen_at(
    samples: Sequence[Sample], upstream: str, addresses: list[str], since: float
) -> float | None:
    """Seconds from `since` until the caller first knew every one of `addresses`."""
    for t, data in samples:
        known = {e["address"] for e in (data.get(upstream) or {}).get("endpoints", [])}
        if t >= since and set(addresses) <= known:
            return round(t - since, 3)
    return None


def _common(
    phase: Phase,
    calls: Sequence[Call],
    success: float | None,
    p99_ms: float | None,
    no_unknown: bool | None,
    no_past_deadline: bool | None,
    slack_s: float,
) -> list[Verdict]:
    out = []
    if success is not None:
        got = success_ratio(calls)
        out.append(
            Verdict(
                phase.name,
                f"success_ratio >= {success}",
                bool(calls) and got >= success,
                f"{got:.4f} of {len(calls)} calls" if calls else "no calls",
            )
        )
    if p99_ms is not None:
        got_ms = percentile([c.latency * 1000 for c in calls], 0.99)
        out.append(Verdict(phase.name, f"p99_ms <= {p99_ms}", got_ms <= p99_ms, f"{got_ms:.1f}"))
    if no_unknown:
        bad = [c for c in calls if c.status == "UNKNOWN"]
        out.append(Verdict(phase.name, "no UNKNOWN", not bad, f"{len(bad)} UNKNOWN"))
    if no_past_deadline:
        late = [c for c in calls if c.status == "HUNG" or c.latency > c.deadline + slack_s]
        worst = max((c.latency for c in late), default=0.0)
        out.append(
            Verdict(
                phase.name,
                "no call past its deadline",
                not late,
                f"{len(late)} late" + (f", worst {worst:.3f}s" if late else ""),
            )
        )
    return out


def _instances(phase: Phase, expect: Expect, ev: Evidence) -> list[Verdict]:
    """The expectations read from the caller's /clusters samples."""
    assert phase.fault is not None
    out = []
    who = ev.victim_names.get(phase.fault, "?")
    if expect.victim_share_below is not None:
        address = ev.victims.get(phase.fault, "")
        got = attempt_share(ev.samples, ev.upstream, address, phase.start + expect.settle_s,
                            phase.end)  # fmt: skip
        out.append(
            Verdict(
                phase.name,
                f"{who}'s share of attempts < {expect.victim_share_below}",
                got is not None and got < expect.victim_share_below,
                "no attempts seen" if got is None else f"{got:.4f}",
                f"counted from {expect.settle_s}s after the fault",
            )
        )
    if expect.endpoints_kept:
        counts = endpoint_counts(ev.samples, ev.upstream)
        before = [n for t, n in counts if t <= phase.start]
        held = before[-1] if before else 0
        during = [n for t, n in counts if phase.start <= t < phase.end]
        low = min(during, default=held)
        out.append(Verdict(phase.name, "no endpoint forgotten", low >= held,
                           f"{low} known at the lowest, {held} before"))  # fmt: skip
    if expect.discovered_within_s is not None:
        n = expect.discovered_within_s
        added = ev.added.get(phase.fault, [])
        seen = seen_at(ev.samples, ev.upstream, added, phase.start) if added else None
        out.append(Verdict(phase.name, f"new instances discovered within {n}s",
                           seen is not None and seen <= n,
                           f"after {seen}s" if seen is not None else "never"))  # fmt: skip
    return out


def evaluate(
    scenario: Scenario,
    calls: Sequence[Call],
    phase_list: Sequence[Phase],
    evidence: Evidence,
) -> list[Verdict]:
    """Every expectation of the scenario, checked against what was measured."""
    steady: SteadyState = scenario.steady_state
    slack = steady.deadline_slack_ms / 1000
    out: list[Verdict] = []
    injected = {p.fault for p in phase_list if p.fault is not None}
    for phase in phase_list:
        in_phase = phase.calls(calls)
        if phase.fault is None:
            out += _common(
                phase, in_phase, steady.success_ratio, steady.p99_ms, steady.no_unknown,
                steady.no_past_deadline, slack,
            )  # fmt: skip
            continue
        expect: Expect = scenario.faults[phase.fault].expect
        out += _common(
            phase, in_phase, expect.success_ratio, expect.p99_ms,
            steady.no_unknown if expect.no_unknown is None else expect.no_unknown,
            steady.no_past_deadline if expect.no_past_deadline is None else expect.no_past_deadline,
            slack,
        )  # fmt: skip
        if expect.recovered_within_s is not None:
            n = expect.recovered_within_s
            after = [c for c in in_phase if c.t >= phase.start + n]
            got = success_ratio(after)
            held = bool(after) and got >= steady.success_ratio
            out.append(
                Verdict(
                    phase.name,
                    f"recovered within {n}s",
                    held,
                    f"{got:.4f} of {len(after)} calls after {n}s"
                    if after
                    else f"no calls more than {n}s after the fault",
                    f"success_ratio >= {steady.success_ratio} (the steady state's)",
                )
            )
        if expect.traffic_moved_within_s is not None:
            n = expect.traffic_moved_within_s
            address = evidence.victims.get(phase.fault)
            moved = (
                None
                if address is None
                else moved_time(evidence.samples, evidence.upstream, address, phase.start)
            )
            who = evidence.victim_names.get(phase.fault, "?")
            out.append(
                Verdict(
                    phase.name,
                    f"traffic moved within {n}s",
                    moved is not None and moved <= n,
                    f"moved off {who} after {moved}s"
                    if moved is not None
                    else f"{who} kept getting calls",
                )
            )
        out += _instances(phase, expect, evidence)
    for i, fault in enumerate(scenario.faults):
        if i not in injected:
            out.append(
                Verdict(
                    f"{i}: {fault.label}",
                    "fault injected",
                    False,
                    "not injected",
                    "the run was aborted before this fault",
                )
            )
    return out
