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

# How a sidecar error's message begins, per local-origin reason ("<this> <target> at <address>")
EXPLAIN = {
    "connect_failed": "sidecar could not connect to",
    "tls_handshake": "sidecar's mTLS handshake failed with",
    "connection_lost": "sidecar lost its connection to",
    "timeout": "deadline expired while the sidecar waited on",
    "message_too_large": "message over max_message_bytes from",
}


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
        """Does this count against the endpoint's latency score and retry budget?"""
        return self is not _SUCCESS and self is not _CANCELLED  # (on every attempt: cheap)

    @property
    def trips_breaker(self) -> bool:
        """Does this say the endpoint is sick, so its breaker should count it?

        A drop by the peer's admission (OVERLOADED) says the peer is busy, not sick:
        under overload every instance sheds, and ejecting one of them halves the
        capacity left (the overload chaos scenario measured goodput falling from ~80
        to ~38 calls/s while one instance sat ejected). Drops feed the latency score,
        retries (always safe) and adaptive throttling instead.
        """
        return self is not _SUCCESS and self is not _CANCELLED and self is not _OVERLOADED


_SUCCESS, _CANCELLED, _OVERLOADED = Outcome.SUCCESS, Outcome.CANCELLED, Outcome.OVERLOADED


# grpc-timeout is rounded up on the wire (~1%, FACTS.md), so the caller gives up a
# little before the deadline this hop computed from it; a cancel that close to the
# deadline is the caller's timer, not the caller losing interest.
_DEADLINE_SLACK_RATIO = 0.02
_DEADLINE_SLACK_S = 0.005


def caller_gone(started: float, deadline: float | None, now: float) -> Outcome:
    """The verdict on an attempt whose caller went away at `now`.

    At (or just before) the deadline the attempt timed out: the endpoint did not
    answer in time, and breakers and latency scores must learn it, or a hung
    instance is never ejected. Earlier, the caller merely lost interest.
    """
    if deadline is None:
        return Outcome.CANCELLED
    slack = _DEADLINE_SLACK_RATIO * max(deadline - started, 0.0) + _DEADLINE_SLACK_S
    return Outcome.TIMEOUT if now >= deadline - slack else Outcome.CANCELLED


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
