"""Upstream-level limits: circuit breaking in Envoy's sense.

Pure (no I/O, no clock). Caps how much one upstream may hold of this sidecar at
once, so a slow upstream cannot pile up unbounded calls (and memory) here:

- `max_requests`: calls in flight to the upstream (one token per call, held
  across its retries: attempts of one call never overlap);
- `max_pending`: of those, calls still waiting for a usable connection.

Beyond either, the call fails fast with RESOURCE_EXHAUSTED and
`x-sidecar-error: overloaded` instead of queueing. Every token is released
exactly once: a second `release()` is a no-op, so a `finally:` and an explicit
release cannot both decrement.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sidecar.outcome import SIDECAR_ERROR_KEY


class LimitExceeded(Exception):
    """The upstream is at its limit; answer the caller with `status` and `trailers`."""

    def __init__(self, upstream: str, which: str) -> None:
        super().__init__(f"upstream {upstream!r} is at {which}")
        self.upstream = upstream
        self.which = which  # "max_requests" or "max_pending"
        # set here, not in the class body: a compiled exception class (sidecar/native.py)
        # gives its instances no class-level defaults
        self.status = "RESOURCE_EXHAUSTED"
        self.reason = "overloaded"

    @property
    def trailers(self) -> tuple[tuple[str, str], ...]:
        return ((SIDECAR_ERROR_KEY, self.reason),)


class LimitToken:
    """One call's share of an upstream's limits."""

    __slots__ = ("_limits", "_pending", "released")

    def __init__(self, limits: UpstreamLimits) -> None:
        self._limits = limits
        self._pending = False
        self.released = False

    @contextmanager
    def pending(self) -> Iterator[None]:
        """Hold a pending slot while waiting for a connection; raises LimitExceeded."""
        if self._pending:
            yield  # already counted: nesting is harmless
            return
        if not self.try_enter_pending():
            raise LimitExceeded(self._limits.upstream, "max_pending")
        try:
            yield
        finally:
            self.leave_pending()

    def try_enter_pending(self) -> bool:
        """Take a pending slot (False: `max_pending` calls already wait); pair with
        `leave_pending()`, or `release()` frees it too."""
        lim = self._limits
        if self.released:
            raise RuntimeError("token already released")
        if self._pending:
            return True
        if lim.pending >= lim.max_pending:
            return False
        lim.pending += 1
        self._pending = True
        return True

    def leave_pending(self) -> None:
        """The connection is there (or the wait is over); idempotent."""
        self._leave_pending()

    def _leave_pending(self) -> None:
        if self._pending:
            self._pending = False
            self._limits.pending -= 1

    def release(self) -> None:
        """Give the slot back; idempotent."""
        if self.released:
            return
        self.released = True
        self._leave_pending()
        self._limits.active -= 1


class UpstreamLimits:
    """One per upstream; the data plane calls `acquire()` once per call."""

    def __init__(self, upstream: str, max_requests: int, max_pending: int) -> None:
        self.upstream = upstream
        self.max_requests = max_requests
        self.max_pending = max_pending
        self.active = 0
        self.pending = 0

    def try_acquire(self) -> LimitToken | None:
        """A token, or None when `max_requests` calls are already in flight."""
        if self.active >= self.max_requests:
            return None
        self.active += 1
        return LimitToken(self)

    @contextmanager
    def acquire(self) -> Iterator[LimitToken]:
        """`with limits.acquire() as token:` raises LimitExceeded; releases on exit."""
        token = self.try_acquire()
        if token is None:
            raise LimitExceeded(self.upstream, "max_requests")
        try:
            yield token
        finally:
            token.release()

    def __repr__(self) -> str:
        return (
            f"UpstreamLimits({self.upstream!r}, active={self.active}/{self.max_requests}, "
            f"pending={self.pending}/{self.max_pending})"
        )
