"""Circuit breakers: per-endpoint failure accrual that takes sick endpoints out of the pick.

Pure policy (no I/O; `now` is passed in). Wraps pybreaker so nothing else depends on it.
"""

from sidecar.breaker.breaker import BreakerGroup, BreakerState, EndpointBreaker

__all__ = ["BreakerGroup", "BreakerState", "EndpointBreaker"]
