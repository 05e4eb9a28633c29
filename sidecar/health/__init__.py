"""Health: of the local app (as the inbound sidecar sees and reports it) and of
upstream endpoints (active checks).

`state` is the pure threshold logic of active checks; the cluster owns one state
per endpoint and a checker feeds it through `Cluster.record_health_check`.
"""

from sidecar.health.state import HealthCheckState

__all__ = ["HealthCheckState"]
