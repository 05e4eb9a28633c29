"""Active health-check state of one endpoint: the threshold logic, nothing else.

Pure (no I/O). Envoy's rule: an endpoint becomes unhealthy after
`unhealthy_threshold` failed checks in a row and healthy again after
`healthy_threshold` passed checks in a row; a single odd result changes nothing.
A new endpoint starts healthy: discovery just vouched for it, and waiting a
whole interval before using a fresh instance would slow every deploy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HealthCheckState:
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    healthy: bool = True
    streak: int = 0  # consecutive results that disagree with `healthy`
    checks: int = 0
    last_checked: float | None = None

    def record(self, ok: bool, now: float) -> bool:
        """Count one check result; return True when `healthy` flipped."""
        self.checks += 1
        self.last_checked = now
        if ok == self.healthy:
            self.streak = 0
            return False
        self.streak += 1
        needed = self.healthy_threshold if ok else self.unhealthy_threshold
        if self.streak < needed:
            return False
        self.healthy = ok
        self.streak = 0
        return True
