"""Per-endpoint circuit breakers (Nygard, "Release It!"), on pybreaker, with an injected clock.

Pure policy (no I/O; `now` comes in). One `pybreaker.CircuitBreaker` per endpoint
holds the state machine: consecutive-failure counting, closed -> open after
`fail_max`, half-open -> closed on a successful trial, half-open -> open on a
failed one, and listener notifications. Nothing outside this package imports
pybreaker.

The clock. pybreaker stamps `opened_at` with `datetime.now()` and decides
open -> half-open itself when a call arrives after `reset_timeout` of wall time.
We give it a reset timeout it never reaches (`_NEVER_S`), so it never makes that
move on its own, and keep the time ourselves: a listener notes `opened_at` from
the `now` we were handed when the breaker opened, and `probe_due(now)` says when
the (growing) open time is up; the cluster then sends exactly one probe and we
call `half_open()`. pybreaker's wall-clock `opened_at` is written but never
matters, so tests drive everything with a fake clock.

Results are fed in after the fact: the data plane's attempt is already over
when `record()` runs, so each result is replayed through `CircuitBreaker.call`
with a function that returns (success) or raises (failure). Only
`Outcome.is_failure` counts; CANCELLED says nothing about the endpoint and is
ignored. While open, results of calls sent before the trip are ignored
(pybreaker refuses the call); while half-open, the first result back decides.

Repeated trips grow the open time: reset_timeout_s x 2^(trips-1), capped at
max_reset_timeout_s. The trip count decays by one for each such period the
breaker then stays closed, so an endpoint that recovers for good is forgiven
(Envoy's outlier detection does the same with its ejection multiplier).

Ejection cap: a `BreakerGroup` (one per upstream) never lets more than
max_ejection_percent of the upstream's endpoints be open or half-open at once
(floor, so an upstream of one endpoint never ejects it). A failure that would
trip a breaker past the cap is not counted; the breaker stays one failure short
and trips on the next failure once there is room.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
from collections.abc import Callable
from typing import Any

import pybreaker

from sidecar.breaker.metrics import STATE_VALUES, BreakerMetrics
from sidecar.config import Breaker as BreakerConfig
from sidecar.logs import Folding
from sidecar.outcome import Outcome

log = logging.getLogger(__name__)
_fold = Folding(log)  # a flapping endpoint logs once per interval, with a count

_NEVER_S = 10.0 * 365 * 86400  # pybreaker's own wall-clock reset never fires


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_FROM_PYBREAKER = {
    pybreaker.STATE_CLOSED: BreakerState.CLOSED,
    pybreaker.STATE_OPEN: BreakerState.OPEN,
    pybreaker.STATE_HALF_OPEN: BreakerState.HALF_OPEN,
}


class _Failed(Exception):
    """Replays a failed attempt into pybreaker."""


def _fail() -> None:
    raise _Failed


def _succeed() -> None:
    return None


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: EndpointBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self.owner._on_state_change(_FROM_PYBREAKER[new_state.name])


class BreakerGroup:
    """The breakers of one upstream: shared config, metrics labels, ejection cap."""

    def __init__(
        self,
        upstream: str,
        config: BreakerConfig | None = None,
        metrics: BreakerMetrics | None = None,
    ) -> None:
        self.upstream = upstream
        self.config = config or BreakerConfig()
        self.metrics = metrics or BreakerMetrics()
        self.size = 0  # endpoints in the upstream, set by the cluster
        self.ejected = 0  # breakers open or half-open
        # exported at 0 from the start, so a dashboard or alert has a series per upstream
        # before the first held trip (a labelled counter shows nothing until it is touched)
        self.metrics.held.labels(upstream)

    def new(self, endpoint: str, on_change: Callable[[], None] | None = None) -> EndpointBreaker:
        return EndpointBreaker(self, endpoint, on_change)

    @property
    def max_ejected(self) -> int:
        return math.floor(self.size * self.config.max_ejection_percent / 100.0)

    def may_eject(self) -> bool:
        return self.ejected < self.max_ejected


class EndpointBreaker:
    """One endpoint's breaker. Ask `state`, `probe_due(now)`; feed `record()`."""

    def __init__(
        self, group: BreakerGroup, endpoint: str, on_change: Callable[[], None] | None = None
    ) -> None:
        self.group = group
        self.endpoint = endpoint
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.trips = 0  # recent trips, sets the open time
        self.opened_at: float | None = None
        self.closed_at: float | None = None
        self.probe_sent_at: float | None = None
        self._now = 0.0
        self._cb = pybreaker.CircuitBreaker(
            fail_max=group.config.fail_max,
            reset_timeout=_NEVER_S,
            listeners=[_Listener(self)],
            name=f"{group.upstream}/{endpoint}",
        )
        group.metrics.state.labels(group.upstream, endpoint).set(0)

    @property
    def open_for_s(self) -> float:
        """How long the current (or next) trip keeps the endpoint out."""
        cfg = self.group.config
        level = max(self.trips - 1, 0)
        return min(cfg.reset_timeout_s * 2.0 ** min(level, 64), cfg.max_reset_timeout_s)

    @property
    def fail_counter(self) -> int:
        return int(self._cb.fail_counter)

    def reopen_at(self) -> float | None:
        """When the next probe is due (None while closed)."""
        if self.state is BreakerState.OPEN and self.opened_at is not None:
            return self.opened_at + self.open_for_s
        if self.state is BreakerState.HALF_OPEN and self.probe_sent_at is not None:
            # a probe that never came back must not wedge the breaker half-open
            return self.probe_sent_at + self.open_for_s
        return None

    def probe_due(self, now: float) -> bool:
        due = self.reopen_at()
        return due is not None and now >= due

    def begin_probe(self, now: float) -> None:
        """The cluster is sending the one trial request: go half-open."""
        self._now = now
        self.probe_sent_at = now
        if self.state is BreakerState.OPEN:
            self._cb.half_open()

    def record(self, outcome: Outcome, now: float) -> None:
        """Count one finished attempt against this endpoint."""
        if outcome is Outcome.CANCELLED or (outcome.is_failure and not outcome.trips_breaker):
            return  # neither sick nor healthy: a caller gone, or a busy peer shedding
        if not outcome.is_failure:
            if self.state is BreakerState.CLOSED and not self._cb.fail_counter:
                return  # nothing to reset: the common case skips pybreaker's lock
            self._now = now
            self._call(_succeed)
            return
        self._now = now
        tripping = (
            self.state is BreakerState.CLOSED and self._cb.fail_counter + 1 >= self._cb.fail_max
        )
        if tripping and not self.group.may_eject():
            self.group.metrics.held.labels(self.group.upstream).inc()
            _fold.log(
                now,
                logging.INFO,
                ("held", self.group.upstream, self.endpoint),
                "breaker %s/%s held closed: %d of %d endpoints already ejected",
                self.group.upstream,
                self.endpoint,
                self.group.ejected,
                self.group.size,
            )
            return
        self._call(_fail)

    def _call(self, func: Callable[[], None]) -> None:
        with contextlib.suppress(_Failed, pybreaker.CircuitBreakerError):
            self._cb.call(func)

    def _on_state_change(self, new: BreakerState) -> None:
        old, now = self.state, self._now
        if old is new:
            return
        ejected_before = old is not BreakerState.CLOSED
        ejected_after = new is not BreakerState.CLOSED
        self.group.ejected += int(ejected_after) - int(ejected_before)
        self.state = new
        if new is BreakerState.OPEN:
            self._decay_trips(now)
            self.trips += 1
            self.opened_at = now
            self.probe_sent_at = None
        elif new is BreakerState.CLOSED:
            self.closed_at = now
            self.probe_sent_at = None
        _fold.log(
            now,
            logging.WARNING,
            ("breaker", self.group.upstream, self.endpoint, new),
            "breaker %s/%s %s -> %s (trips=%d, open for %.1fs)",
            self.group.upstream,
            self.endpoint,
            old.value,
            new.value,
            self.trips,
            self.open_for_s,
        )
        metrics = self.group.metrics
        metrics.state.labels(self.group.upstream, self.endpoint).set(STATE_VALUES[new.value])
        metrics.transitions.labels(self.group.upstream, self.endpoint, new.value).inc()
        if self.on_change is not None:
            self.on_change()

    def _decay_trips(self, now: float) -> None:
        if self.closed_at is None or self.trips == 0:
            return
        quiet = now - self.closed_at
        while self.trips > 0 and quiet >= self.open_for_s:
            quiet -= self.open_for_s
            self.trips -= 1

    def discard(self) -> None:
        """The endpoint left discovery: release its ejection slot and metric series."""
        if self.state is not BreakerState.CLOSED:
            self.group.ejected -= 1
            self.state = BreakerState.CLOSED
        with contextlib.suppress(KeyError):
            self.group.metrics.state.remove(self.group.upstream, self.endpoint)

    def __repr__(self) -> str:
        return f"<EndpointBreaker {self.endpoint} {self.state.value} trips={self.trips}>"
