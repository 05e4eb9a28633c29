"""What inbound authorization counts (sidecar/authz/step.py), on the sidecar's registry
(sidecar/metrics.py).

Declarations only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class AuthzMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.decisions = Counter(
            "sidecar_authz_decisions_total",
            "Inbound authorization decisions (would_deny: denied by the rules, let through "
            "in audit mode)",
            ["decision"],
            registry=registry,
        )
