"""When to refresh a name and what to publish: the failure-handling state machine.

Pure (no I/O): every method takes `now` and a `random.Random` and returns what to
publish (or None), and sets `next_at`, the time of the next lookup.

Rules, per (upstream, site) name:

- A good answer (at least one endpoint) is published at once; the next lookup
  comes after its TTL, clamped to [ttl_floor_s, ttl_cap_s] and shortened by up
  to `jitter` (a fraction) so sidecars started together do not refresh together
  and no answer is used past its TTL.
- A failure (timeout, SERVFAIL, REFUSED, server down, garbage) is no news about
  the service: the last good set stays, marked stale, and the lookup is retried
  with exponential backoff (backoff_initial_s doubling up to backoff_max_s).
- NXDOMAIN, NODATA, or records whose targets have no address are real answers
  but are believed only once they have held for `empty_grace_s` with no good
  answer in between, so a flapping registry cannot empty a cluster in one blow.
  Until then the last good set stays, marked stale. Without a previous good set
  there is nothing to protect and the empty answer is believed at once.
- Target "." (RFC 2782: decidedly not available) is an explicit statement by
  whoever runs the zone and is believed at once.

Only changes are published: (endpoints, stale) differing from the last published.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from sidecar.config import DiscoveryConfig
from sidecar.endpoint import Endpoint

# Never schedule sooner than this, whatever the config says (TTL 0 with floor 0
# would otherwise spin).
MIN_DELAY_S = 0.05


@dataclass(frozen=True, slots=True)
class Timing:
    ttl_floor_s: float = 5.0
    ttl_cap_s: float = 300.0
    jitter: float = 0.1
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    empty_grace_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: DiscoveryConfig) -> Timing:
        return cls(
            cfg.ttl_floor_s,
            cfg.ttl_cap_s,
            cfg.jitter,
            cfg.backoff_initial_s,
            cfg.backoff_max_s,
            cfg.empty_grace_s,
        )

    def refresh_delay(self, ttl: float | None, rng: random.Random) -> float:
        base = self.ttl_floor_s if ttl is None else ttl
        base = min(self.ttl_cap_s, max(self.ttl_floor_s, base))
        return max(MIN_DELAY_S, base * (1.0 - self.jitter * rng.random()))

    def backoff_delay(self, failures: int, rng: random.Random) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(failures - 1, 32))
        return max(MIN_DELAY_S, base * (1.0 - self.jitter * rng.random()))


@dataclass(frozen=True, slots=True)
class Publish:
    """A whole endpoint set to hand to the cluster, and whether it is stale."""

    endpoints: tuple[Endpoint, ...]
    stale: bool


class NameState:
    """The state of one watched SRV name."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.endpoints: tuple[Endpoint, ...] | None = None  # last published; None: never
        self.stale = False
        self.last_refresh: float | None = None  # last answer that was believed
        self.last_error: str | None = None
        self.failures = 0
        self.empty_since: float | None = None
        self.next_at = 0.0

    def _publish(self, endpoints: tuple[Endpoint, ...], stale: bool) -> Publish | None:
        if endpoints == self.endpoints and stale == self.stale:
            return None
        self.endpoints, self.stale = endpoints, stale
        return Publish(endpoints, stale)

    def on_answer(
        self, endpoints: tuple[Endpoint, ...], ttl: float | None, now: float, rng: random.Random
    ) -> Publish | None:
        """A usable answer; an empty `endpoints` is routed to `on_empty`."""
        if not endpoints:
            return self.on_empty("no address for any target", ttl, now, rng)
        self.failures = 0
        self.empty_since = None
        self.last_refresh = now
        self.last_error = None
        self.next_at = now + self.timing.refresh_delay(ttl, rng)
        return self._publish(tuple(endpoints), stale=False)

    def on_empty(
        self,
        why: str,
        ttl: float | None,
        now: float,
        rng: random.Random,
        *,
        explicit: bool = False,
    ) -> Publish | None:
        """NXDOMAIN, NODATA, nothing resolvable, or (explicit) target "."."""
        self.failures = 0
        delay = self.timing.refresh_delay(ttl, rng)
        if explicit or not self.endpoints:
            self.empty_since = None
            self.last_refresh = now
            self.last_error = None if explicit else why
            self.next_at = now + delay
            return self._publish((), stale=False)
        if self.empty_since is None:
            self.empty_since = now
        believe_at = self.empty_since + self.timing.empty_grace_s
        if now >= believe_at:
            self.empty_since = None
            self.last_refresh = now
            self.last_error = why
            self.next_at = now + delay
            return self._publish((), stale=False)
        self.last_error = f"{why} (believed after {self.timing.empty_grace_s:g}s)"
        self.next_at = _not_before(now, min(now + delay, believe_at))
        return self._publish(self.endpoints, stale=True)

    def on_failure(self, reason: str, now: float, rng: random.Random) -> Publish | None:
        """No answer at all: keep what we have, mark it stale, back off."""
        self.failures += 1
        self.last_error = reason
        self.next_at = now + self.timing.backoff_delay(self.failures, rng)
        if self.endpoints is None:
            return None
        return self._publish(self.endpoints, stale=bool(self.endpoints))

    def snapshot(self) -> dict[str, Any]:
        return {
            "endpoints": [ep.address for ep in self.endpoints or ()],
            "stale": self.stale,
            "last_refresh": self.last_refresh,
            "last_error": self.last_error,
            "failures": self.failures,
            "next_refresh": self.next_at,
        }


def _not_before(now: float, at: float) -> float:
    """`at`, but at least MIN_DELAY_S after `now` as the caller will measure it
    (`at - now`): `now + MIN_DELAY_S` alone can come out a few ulps short."""
    at = max(at, now + MIN_DELAY_S)
    while at - now < MIN_DELAY_S:
        at = math.nextafter(at, math.inf)
    return at
