"""Active health checks of upstream endpoints.

`state` is the pure threshold logic; the cluster owns one state per endpoint and
the checker (I/O, when configured) feeds it through `Cluster.record_health_check`.
"""

from sidecar.health.state import HealthCheckState

__all__ = ["HealthCheckState"]
