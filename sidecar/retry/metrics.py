"""Prometheus metrics of the outbound failure policies, on the registry they are given.

No I/O of its own. One `RetryMetrics` per sidecar (sidecar/metrics.py's `Metrics`);
`registry=None` registers nowhere (a policy built alone, in a unit test).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class RetryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.retries = Counter(
            "sidecar_retries_total",
            "Retries sent, by upstream and by what made the previous attempt retriable.",
            ["upstream", "reason"],
            registry=registry,
        )
        self.budget_exhausted = Counter(
            "sidecar_retry_budget_exhausted_total",
            "Retries that were safe and wanted but refused because the retry budget was spent.",
            ["upstream"],
            registry=registry,
        )
        self.throttled = Counter(
            "sidecar_throttled_requests_total",
            "Attempts rejected locally by client-side adaptive throttling.",
            ["upstream"],
            registry=registry,
        )
        self.hedges = Counter(
            "sidecar_hedges_total",
            "Hedged attempts sent (copies of a call after its first attempt), by upstream.",
            ["upstream"],
            registry=registry,
        )
        self.hedges_won = Counter(
            "sidecar_hedges_won_total",
            "Hedged calls whose answer came from a hedged attempt rather than the first.",
            ["upstream"],
            registry=registry,
        )
        self.hedges_cancelled = Counter(
            "sidecar_hedges_cancelled_total",
            "Attempts of a hedged call cancelled (RST_STREAM CANCEL) because another answered.",
            ["upstream"],
            registry=registry,
        )
        self.hedge_budget_exhausted = Counter(
            "sidecar_hedge_budget_exhausted_total",
            "Hedged attempts not sent because the upstream's hedging budget was spent.",
            ["upstream"],
            registry=registry,
        )
