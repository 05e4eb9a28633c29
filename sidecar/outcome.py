"""How one attempt against one endpoint ended, as the policies see it.

Pure. The data plane classifies every attempt once; breakers, outlier ejection,
latency EWMA, retry budgets and throttling all read the same verdict. Only
failures that say *the endpoint* is sick count against it: an application status
such as NOT_FOUND is a healthy answer.
"""

from __future__ import annotations

import enum

# Reasons the sidecar itself puts in `x-sidecar-error` trailing metadata.
SIDECAR_ERROR_KEY = "x-sidecar-error"


class Outcome(enum.Enum):
    SUCCESS = "success"  # OK, or an application status: the endpoint is healthy
    CONNECT_FAILED = "connect_failed"  # no connection could be made (local-origin)
    UNAVAILABLE = "unavailable"  # UNAVAILABLE from the endpoint
    TIMEOUT = "timeout"  # per-try timeout or deadline spent waiting on the endpoint
    OVERLOADED = "overloaded"  # the peer's sidecar dropped the request before its app saw it
    PEER_ERROR = "peer_error"  # INTERNAL/UNKNOWN made by the peer's sidecar
    CANCELLED = "cancelled"  # the caller gave up: says nothing about the endpoint

    @property
    def is_failure(self) -> bool:
        """Does this count against the endpoint's health?"""
        return self not in (Outcome.SUCCESS, Outcome.CANCELLED)


def classify(status: str, peer_error: str | None = None) -> Outcome:
    """Classify a finished attempt by its gRPC status name and the peer sidecar's
    `x-sidecar-error` trailer (None when the peer's app answered itself)."""
    if status == "OK":
        return Outcome.SUCCESS
    if status == "CANCELLED":
        return Outcome.CANCELLED
    if peer_error in ("overloaded", "deadline"):
        return Outcome.OVERLOADED
    if peer_error == "connect_failed":
        # the peer's sidecar could not reach its own app: that instance is sick
        return Outcome.UNAVAILABLE
    if status == "UNAVAILABLE":
        return Outcome.UNAVAILABLE
    if status == "DEADLINE_EXCEEDED":
        return Outcome.TIMEOUT
    if status in ("INTERNAL", "UNKNOWN") and peer_error is not None:
        return Outcome.PEER_ERROR
    return Outcome.SUCCESS
