"""Prometheus metrics for circuit breakers, on the default registry.

No I/O of its own (the admin server exports the default registry).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

# 0 = closed, 1 = half-open (one probe allowed), 2 = open: higher is sicker.
STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}

BREAKER_STATE = Gauge(
    "sidecar_breaker_state",
    "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
    ["upstream", "endpoint"],
)
BREAKER_TRANSITIONS = Counter(
    "sidecar_breaker_transitions_total",
    "Circuit breaker state changes per endpoint, by the state entered.",
    ["upstream", "endpoint", "to"],
)
BREAKER_HELD = Counter(
    "sidecar_breaker_ejections_held_total",
    "Trips refused because max_ejection_percent of the upstream was already ejected.",
    ["upstream"],
)
