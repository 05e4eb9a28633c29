"""Concurrency limit algorithms for inbound admission.

Pure (no clock of their own, no I/O). Split from enforcement as in Netflix's
concurrency-limits: a `Limit` only turns samples into a number; the queue in
`sidecar.shedding.queue` enforces it. A sample is one finished call to the app:
its round-trip time, how many calls were in flight when it started, and whether
it was dropped (the app timed out or refused it as overloaded).

Whatever the samples (NaN, negative, huge, any order), `limit` stays an int in
[min_limit, max_limit]: tests check that with Hypothesis.
"""

from __future__ import annotations

import math
from typing import Protocol

from sidecar.config import InboundAdmission


class Limit(Protocol):
    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        ...

    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        """Feed one finished call."""
        ...


def _clamp(value: float, lo: int, hi: int) -> float:
    return min(float(hi), max(float(lo), value))


class FixedLimit:
    """`max_concurrency`: a constant limit."""

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)

    @property
    def limit(self) -> int:
        return self._limit

    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        pass

    def __repr__(self) -> str:
        return f"FixedLimit({self._limit})"


class AIMDLimit:
    """Additive increase, multiplicative decrease (Netflix `AIMDLimit`; TCP Reno's rule).

    A drop multiplies the limit by `backoff_ratio`; a success while the limit is
    actually used (in flight >= half of it) adds one. Growing only when used keeps
    an idle service from drifting to `max_limit` and then admitting a burst it
    cannot serve.
    """

    def __init__(
        self, initial: int, min_limit: int, max_limit: int, backoff_ratio: float = 0.9
    ) -> None:
        if not 0.0 < backoff_ratio < 1.0:
            raise ValueError("backoff_ratio must be in (0, 1)")
        self.min_limit = min_limit
        self.max_limit = max(min_limit, max_limit)
        self.backoff_ratio = backoff_ratio
        self._limit = _clamp(initial, self.min_limit, self.max_limit)

    @property
    def limit(self) -> int:
        return int(self._limit)

    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        if dropped:
            new = self._limit * self.backoff_ratio
        elif in_flight * 2 >= self._limit:
            new = self._limit + 1
        else:
            return
        self._limit = _clamp(math.floor(new), self.min_limit, self.max_limit)

    def __repr__(self) -> str:
        return f"AIMDLimit({self.limit}, [{self.min_limit}, {self.max_limit}])"


class _ExpAvg:
    """Netflix `ExpAvgMeasurement`: a plain mean over `warmup` samples, then an EMA."""

    def __init__(self, window: int, warmup: int) -> None:
        self.factor = 2.0 / (window + 1)
        self.warmup = warmup
        self.count = 0
        self.value = 0.0

    def add(self, sample: float) -> float:
        if self.count < self.warmup:
            self.count += 1
            self.value += (sample - self.value) / self.count
        else:
            self.value = self.value * (1 - self.factor) + sample * self.factor
        return self.value


class GradientLimit:
    """Gradient of long-term to short-term latency (Netflix `Gradient2Limit`).

    Compares each sample's RTT with an exponential average over ~`long_window`
    samples: while RTT stays near the long-term average (within `tolerance`) the
    limit grows by `queue_size` per sample; when latency climbs, the gradient
    `tolerance * long / short` falls below 1 and the limit shrinks in proportion
    (never by more than half per sample, so one outlier cannot collapse it). The
    change is smoothed by `smoothing`. Like Gradient2, it ignores the drop flag:
    latency alone is the signal.
    """

    def __init__(
        self,
        initial: int,
        min_limit: int,
        max_limit: int,
        *,
        long_window: int = 600,
        warmup: int = 10,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        queue_size: float = 4.0,
    ) -> None:
        self.min_limit = min_limit
        self.max_limit = max(min_limit, max_limit)
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.queue_size = queue_size
        self._long = _ExpAvg(long_window, warmup)
        self._limit = _clamp(initial, self.min_limit, self.max_limit)

    @property
    def limit(self) -> int:
        return int(self._limit)

    def on_sample(self, rtt_s: float, in_flight: int, dropped: bool) -> None:
        if not math.isfinite(rtt_s) or rtt_s < 0:
            return  # a broken clock reading says nothing about the app
        short = max(rtt_s, 1e-6)
        long = self._long.add(short)
        # After a long overload the average lags far behind the recovered RTT;
        # decay it faster so the limit is not held down for minutes (as Gradient2).
        if long / short > 2.0:
            self._long.value *= 0.95
        # App-limited: too little traffic to say anything about capacity.
        if in_flight < self._limit / 2:
            return
        gradient = max(0.5, min(1.0, self.tolerance * long / short))
        new = self._limit * gradient + self.queue_size
        new = self._limit * (1 - self.smoothing) + new * self.smoothing
        self._limit = _clamp(new, self.min_limit, self.max_limit)

    def __repr__(self) -> str:
        return f"GradientLimit({self.limit}, [{self.min_limit}, {self.max_limit}])"


def make_limit(config: InboundAdmission) -> Limit | None:
    """The limit `inbound.admission` asks for; None when it sets none.

    With `adaptive`, `max_concurrency` (if set) is the starting limit, and the
    limit moves within [min_concurrency, max_concurrency_limit].
    """
    lo, hi = config.min_concurrency, config.max_concurrency_limit
    if config.adaptive is None:
        return None if config.max_concurrency is None else FixedLimit(config.max_concurrency)
    initial = config.max_concurrency if config.max_concurrency is not None else 20
    if config.adaptive == "aimd":
        return AIMDLimit(initial, lo, hi)
    return GradientLimit(initial, lo, hi)
