"""Peak-sensitive, time-decayed latency EWMA (Finagle's PeakEwma, Linkerd's peak_ewma).

Pure (no I/O; `now` is passed in). A sample above the estimate replaces it at once
(a slow-down is believed immediately); a sample below blends in with weight
1 - exp(-dt/tau), so the estimate forgets in wall time rather than per request.
Between samples the estimate read by the balancer decays towards zero, as Linkerd
and Finagle do, so an endpoint that was slow once is eventually tried again.

A failure is counted as a slow answer: its sample is at least FAILURE_PENALTY_S,
so an endpoint that fails fast looks expensive instead of attractive. A drop by
the peer's admission is a lighter penalty (OVERLOAD_PENALTY_S, about a pushback
interval): the peer is busy, not broken. Penalties do not compound (an earlier
version doubled the estimate per failure, and a few dozen drops pinned an endpoint
at the 60 s cap, out of rotation for minutes after the overload had passed).
"""

from __future__ import annotations

import math

DECAY_TAU_S = 10.0  # Finagle's and Linkerd's default decay window
FAILURE_PENALTY_S = 1.0
OVERLOAD_PENALTY_S = 0.1


class PeakEwma:
    __slots__ = ("estimate", "stamp", "tau")

    def __init__(self, tau: float = DECAY_TAU_S) -> None:
        self.estimate = 0.0  # seconds; 0 until the first sample
        self.stamp = 0.0
        self.tau = tau

    def observe(
        self, rtt: float, now: float, *, failed: bool = False, overloaded: bool = False
    ) -> None:
        if overloaded:
            rtt = max(rtt, OVERLOAD_PENALTY_S)
        elif failed:
            rtt = max(rtt, FAILURE_PENALTY_S)
        if rtt > self.estimate:
            self.estimate = rtt
        else:
            w = math.exp(-max(now - self.stamp, 0.0) / self.tau)
            self.estimate = self.estimate * w + rtt * (1.0 - w)
        self.stamp = now

    def value(self, now: float) -> float:
        """The estimate as the balancer sees it now (decayed since the last sample)."""
        if self.estimate == 0.0:
            return 0.0
        return self.estimate * math.exp(-max(now - self.stamp, 0.0) / self.tau)
