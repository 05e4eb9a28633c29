"""Client-side adaptive throttling (Google SRE book, ch. 21 "Handling Overload").

Pure (time and randomness are passed in). Each client keeps, over a sliding
window, `requests` (attempts the application layer made, including the ones we
rejected locally) and `accepts` (attempts the backend accepted). Once the backend
rejects more than 1/K of them, new attempts are rejected locally with probability

    p = max(0, (requests - K * accepts) / (requests + 1))

so an overloaded upstream sees at most about K times the load it can accept, and
retries cannot hammer it. K = 2 is the book's default; lower is more aggressive.

Attempts still in flight have no verdict yet and are left out of `requests` until
they end: counted as not accepted, they would make a burst of concurrent calls to a
healthy upstream look like a failing one (16 calls in flight, none back yet: p ~ 1).

Below `min_requests` requests in the window nothing is rejected: the formula is
meant for busy clients, and on a quiet one a single failure (requests 1, accepts 0)
would already reject the next call with probability 1/2.
"""

from __future__ import annotations

import random

from sidecar.outcome import Outcome
from sidecar.retry.window import SlidingCounter

# Outcomes that say the backend did *not* accept the request. A cancelled call is
# the caller giving up, not the backend refusing, so it counts as accepted; an
# application error is an accepted request too.
_REJECTED = frozenset(
    {Outcome.OVERLOADED, Outcome.UNAVAILABLE, Outcome.CONNECT_FAILED, Outcome.TIMEOUT}
)
_SUCCESS = Outcome.SUCCESS  # the common case, checked first (an enum hashes in Python)


def reject_probability(requests: float, accepts: float, k: float) -> float:
    """The SRE book's formula."""
    return max(0.0, (requests - k * accepts) / (requests + 1.0))


class AdaptiveThrottle:
    """One per upstream. `allow` before every attempt; `record` after it ends."""

    def __init__(
        self, k: float = 2.0, window_s: float = 120.0, buckets: int = 60, min_requests: int = 0
    ) -> None:
        self.k = k
        self.min_requests = min_requests
        self._requests = SlidingCounter(window_s, buckets)
        self._accepts = SlidingCounter(window_s, buckets)
        self.in_flight = 0  # allowed attempts not yet recorded

    def probability(self, now: float) -> float:
        """Current local rejection probability."""
        requests = self._requests.total(now) - self.in_flight
        if requests <= 0.0 or requests < self.min_requests:
            return 0.0  # (the formula gives 0 for no requests too)
        return reject_probability(requests, self._accepts.total(now), self.k)

    def allow(self, now: float, rng: random.Random) -> bool:
        """Count an attempt and say whether to send it (False: reject it locally)."""
        p = self.probability(now)
        self._requests.add(now)
        if p > 0.0 and rng.random() < p:
            return False
        self.in_flight += 1
        return True

    def unsent(self, now: float) -> None:
        """An allowed attempt was refused locally before it was sent (a full pending
        queue): no longer in flight, and a request that no backend accepted."""
        if self.in_flight:
            self.in_flight -= 1

    def record(self, now: float, outcome: Outcome) -> None:
        """An attempt that was sent has ended with `outcome`."""
        if self.in_flight:
            self.in_flight -= 1
        if outcome is _SUCCESS or outcome not in _REJECTED:
            self._accepts.add(now)
