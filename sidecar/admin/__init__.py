"""The admin HTTP server (loopback): liveness, readiness, metrics, state, drain."""

from sidecar.admin.server import AdminServer

__all__ = ["AdminServer"]
