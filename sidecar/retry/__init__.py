"""Outbound failure policies: deadlines, upstream limits, throttling, retries.

Pure code: every function takes `now` (and a `random.Random` where it draws);
the data plane does the waiting and the sending. `UpstreamPolicy` bundles them.
"""

from sidecar.retry.backoff import PUSHBACK_KEY, Pushback, full_jitter_s, parse_pushback
from sidecar.retry.budget import RetryBudget
from sidecar.retry.deadline import attempt_timeout_s, call_deadline
from sidecar.retry.limits import LimitExceeded, LimitToken, UpstreamLimits
from sidecar.retry.policy import NEVER_DELIVERED, RetryDecision, RetryPolicy, decide
from sidecar.retry.throttle import AdaptiveThrottle, reject_probability
from sidecar.retry.upstream import THROTTLED_REASON, UpstreamPolicy

__all__ = [
    "NEVER_DELIVERED",
    "PUSHBACK_KEY",
    "THROTTLED_REASON",
    "AdaptiveThrottle",
    "LimitExceeded",
    "LimitToken",
    "Pushback",
    "RetryBudget",
    "RetryDecision",
    "RetryPolicy",
    "UpstreamLimits",
    "UpstreamPolicy",
    "attempt_timeout_s",
    "call_deadline",
    "decide",
    "full_jitter_s",
    "parse_pushback",
    "reject_probability",
]
