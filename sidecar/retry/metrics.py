"""Prometheus metrics of the outbound failure policies (default registry).

No I/O of its own: the admin server's `/metrics` exports the default registry.
"""

from __future__ import annotations

from prometheus_client import Counter

RETRIES = Counter(
    "sidecar_retries_total",
    "Retries sent, by upstream and by what made the previous attempt retriable.",
    ["upstream", "reason"],
)
RETRY_BUDGET_EXHAUSTED = Counter(
    "sidecar_retry_budget_exhausted_total",
    "Retries that were safe and wanted but refused because the retry budget was spent.",
    ["upstream"],
)
THROTTLED = Counter(
    "sidecar_throttled_requests_total",
    "Attempts rejected locally by client-side adaptive throttling.",
    ["upstream"],
)
