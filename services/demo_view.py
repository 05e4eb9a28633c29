"""The demo's view of the mesh: every sidecar's /metrics and /clusters, per endpoint.

Does I/O (HTTP polls of each sidecar's admin port); the arithmetic (rates, p99 from
histogram deltas) is plain functions. Per instance (one row per endpoint, keyed by
its inbound address) it shows what the instance's own inbound sidecar counted (calls
per second, p99, errors, drops by request dropping) and what its callers' sidecars
think of it (breaker state, as seen in their /clusters), plus whether it is
registered in DNS right now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from services.demo_plan import Instance

DROP_REASONS = ("overloaded", "deadline")


@dataclass
class Sample:
    """Cumulative inbound counters of one sidecar at one time."""

    at: float
    requests: float = 0.0
    errors: float = 0.0
    drops: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    registered: bool | None = None


def parse_metrics(text: str, at: float) -> Sample:
    """Sum the inbound families of one sidecar's Prometheus text."""
    s = Sample(at)
    for family in text_string_to_metric_families(text):
        for m in family.samples:
            labels = m.labels
            if m.name == "sidecar_registration_registered":
                s.registered = m.value >= 1
            if labels.get("direction") != "inbound":
                continue
            if m.name == "sidecar_requests_total":
                s.requests += m.value
                if labels.get("code") != "OK":
                    s.errors += m.value
            elif m.name == "sidecar_local_errors_total" and labels.get("reason") in DROP_REASONS:
                s.drops += m.value
            elif m.name == "sidecar_request_duration_seconds_bucket":
                le = float(labels["le"])
                s.buckets[le] = s.buckets.get(le, 0.0) + m.value
    return s


def p99_ms(old: dict[float, float], new: dict[float, float]) -> float | None:
    """The 99th percentile of the calls between two histogram samples (bucket bound)."""
    bounds = sorted(new)
    deltas = [new[b] - old.get(b, 0.0) for b in bounds]
    total = deltas[-1] if deltas else 0.0
    if total <= 0:
        return None
    for bound, cum in zip(bounds, deltas, strict=True):
        if cum >= 0.99 * total:
            return bound * 1000.0 if bound != float("inf") else float("inf")
    return None


@dataclass
class Row:
    inst: Instance
    rps: float = 0.0
    p99_ms: float | None = None
    errors_per_s: float = 0.0
    drops_per_s: float = 0.0
    breaker: str = "-"
    registered: bool | None = None
    up: bool = False
    totals: dict[str, float] = field(default_factory=dict)
    # what earlier lives of a restarted sidecar counted (its counters start again at 0)
    carried: dict[str, float] = field(default_factory=dict)


class MeshView:
    """Polls every sidecar and keeps one row per instance."""

    def __init__(self, instances: Iterable[Instance]) -> None:
        self.instances = list(instances)
        self.by_address = {f"127.0.0.1:{i.inbound_port}": i for i in self.instances}
        self.rows = {i.name: Row(i) for i in self.instances}
        self._last: dict[str, Sample] = {}
        self._first: dict[str, Sample] = {}
        self.breaker_trips: dict[str, int] = {}

    async def poll(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=1.5)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            results = await asyncio.gather(
                *(self._poll_one(http, i) for i in self.instances), return_exceptions=True
            )
        breakers: dict[str, list[str]] = {}
        for inst, result in zip(self.instances, results, strict=True):
            if isinstance(result, BaseException) or result is None:
                continue
            for upstream in result.values():
                if not isinstance(upstream, dict):
                    continue
                for ep in upstream.get("endpoints", ()):
                    target = self.by_address.get(ep["address"])
                    if target is None:
                        continue
                    if ep["breaker"] != "closed":
                        breakers.setdefault(target.name, []).append(
                            f"{ep['breaker']}@{inst.service}-{inst.site}"
                        )
                    trips = int(ep.get("breaker_trips", 0))
                    key = f"{inst.name}>{target.name}"
                    self.breaker_trips[key] = max(self.breaker_trips.get(key, 0), trips)
        for name, row in self.rows.items():
            row.breaker = ", ".join(breakers.get(name, [])) or "closed"

    async def _poll_one(self, http: Any, inst: Instance) -> dict[str, Any] | None:
        row = self.rows[inst.name]
        base = f"http://127.0.0.1:{inst.admin_port}"
        try:
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
        except Exception:
            row.up = False
            row.rps = row.errors_per_s = row.drops_per_s = 0.0
            row.p99_ms = None
            return None
        now = time.monotonic()
        sample = parse_metrics(text, now)
        row.up = True
        row.registered = sample.registered
        self._first.setdefault(inst.name, sample)
        last = self._last.get(inst.name)
        if last is not None and sample.requests < last.requests:
            # a restarted sidecar: keep what its previous life counted (a restart whose
            # new count already passed the old one goes unnoticed: an undercount)
            for key, value in (("requests", last.requests), ("errors", last.errors),
                               ("drops", last.drops)):  # fmt: skip
                row.carried[key] = row.carried.get(key, 0.0) + value
        if last is not None and sample.requests >= last.requests and now > last.at:
            dt = now - last.at
            row.rps = (sample.requests - last.requests) / dt
            row.errors_per_s = (sample.errors - last.errors) / dt
            row.drops_per_s = (sample.drops - last.drops) / dt
            row.p99_ms = p99_ms(last.buckets, sample.buckets)
        self._last[inst.name] = sample
        row.totals = {
            "requests": sample.requests + row.carried.get("requests", 0.0),
            "errors": sample.errors + row.carried.get("errors", 0.0),
            "drops": sample.drops + row.carried.get("drops", 0.0),
        }
        clusters: dict[str, Any] | None = None
        if inst.outbound_port is not None:
            with contextlib.suppress(Exception):
                async with http.get(f"{base}/clusters") as r:
                    clusters = await r.json()
        return clusters

    def totals(self) -> list[dict[str, Any]]:
        """Per instance, over the whole run (a restarted sidecar's earlier counts included)."""
        out = []
        for name, row in self.rows.items():
            trips = sum(v for k, v in self.breaker_trips.items() if k.endswith(f">{name}"))
            out.append(
                {
                    "instance": name,
                    "service": row.inst.service,
                    "site": row.inst.site,
                    "requests": int(row.totals.get("requests", 0)),
                    "errors": int(row.totals.get("errors", 0)),
                    "drops": int(row.totals.get("drops", 0)),
                    "breaker_trips": trips,
                }
            )
        return out


def render_rows(view: MeshView) -> Any:
    from rich.table import Table

    table = Table(title="per endpoint (its inbound sidecar; breakers as its callers see them)")
    for col in ("service", "site", "instance", "req/s", "p99 ms", "err/s", "drops/s", "breaker",
                "DNS"):  # fmt: skip
        table.add_column(col)
    for row in view.rows.values():
        inst = row.inst
        if not row.up:
            table.add_row(inst.service, inst.site, inst.name, "-", "-", "-", "-", row.breaker,
                          "[red]down[/]")  # fmt: skip
            continue
        p99 = "-" if row.p99_ms is None else f"{row.p99_ms:.0f}"
        dns = {True: "registered", False: "[yellow]not registered[/]", None: "-"}[row.registered]
        breaker = row.breaker if row.breaker == "closed" else f"[red]{row.breaker}[/]"
        errs = f"{row.errors_per_s:.1f}"
        table.add_row(inst.service, inst.site, inst.name, f"{row.rps:.1f}", p99,
                      errs if row.errors_per_s < 0.05 else f"[red]{errs}[/]",
                      f"{row.drops_per_s:.1f}", breaker, dns)  # fmt: skip
    return table
