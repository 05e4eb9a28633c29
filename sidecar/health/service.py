"""The inbound listener's own grpc.health.v1.Health state.

Pure (no I/O). SERVING while the local app is healthy and the sidecar is not
draining; NOT_SERVING otherwise, so peers' health checks and balancers move traffic
away before the listener stops. Answers for "" (the whole server) and for the names
given (this instance's service, the app's checked service name). The relay answers
Health/Check and Health/Watch from it (sidecar/h2relay/listeners.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class InboundHealth:
    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = sorted({"", *names})
        self.app_healthy = False
        self.draining = False
        # told after every update (the relay's Health/Watch streams listen here)
        self.listeners: list[Callable[[], None]] = []

    @property
    def serving(self) -> bool:
        return self.app_healthy and not self.draining

    def update(self, *, app_healthy: bool | None = None, draining: bool | None = None) -> None:
        if app_healthy is not None:
            self.app_healthy = app_healthy
        if draining is not None:
            self.draining = draining
        for listener in list(self.listeners):
            listener()
