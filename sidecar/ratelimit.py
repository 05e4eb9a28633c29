"""Local rate limits: token buckets on calls to the local app (`inbound.rate_limits`, per
method pattern) and on calls to an upstream (`upstreams.NAME.rate_limit`).

Pure (no I/O; `now` is passed in). A refused call gets RESOURCE_EXHAUSTED with
`x-sidecar-error: rate_limited` and `grpc-retry-pushback-ms` set to when the next token
will be there (gRPC A6: a client's retry waits that long), as a `Refusal` of the call's
seams (sidecar/policy.py).

The bucket counts in integers so that it is exact to the token however long it runs:
time in nanoseconds, the rate as a fraction p/q tokens per second, the level in units
of 1/(q * 1e9) token; a float level would drift by an ulp per refill and, over a long
run, let one token too many or too few through at a boundary. A bucket starts full
(`burst` tokens), as Envoy's local rate limit's does.

Keys: an inbound rule's bucket is looked up by `(rule, caller)`: the caller is the SPIFFE
ID of the certificate its connection presented (None for plaintext) when the rule says
`per_caller`, else None, so every caller shares the rule's bucket (`buckets_per_rule`
bounds how many are kept, the least recently used dropped first). Both kinds answer `check(method, caller, now)`; a Route
carries one (`Route.rate_limit`) and the relayed call asks it before admission
(sidecar/h2relay/call.py, step 3).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from fractions import Fraction

from sidecar.config import InboundRateLimit, TokenBucketConfig
from sidecar.policy import Refusal

_NS = 1_000_000_000
_MS = 1_000_000


def _ns(now: float) -> int:
    return round(now * _NS)


class TokenBucket:
    """`take(now)`: 0 when a token was taken, else the nanoseconds until one is there."""

    __slots__ = ("_p", "_unit", "burst", "cap", "last", "level")

    def __init__(self, tokens_per_s: float, burst: int, now: float) -> None:
        rate = Fraction(str(tokens_per_s))  # "0.1" is 1/10, not the nearest double
        self._p = rate.numerator  # refill per ns, in level units
        self._unit = rate.denominator * _NS  # one token, in level units
        self.burst = burst
        self.cap = burst * self._unit
        self.level = self.cap  # full at start
        self.last = _ns(now)

    def _refill(self, t: int) -> None:
        if t > self.last:
            self.level = min(self.cap, self.level + (t - self.last) * self._p)
            self.last = t

    def take(self, now: float) -> int:
        t = _ns(now)
        self._refill(t)
        if self.level >= self._unit:
            self.level -= self._unit
            return 0
        missing = self._unit - self.level
        return -(-missing // self._p)  # ceil: the first nanosecond it is there

    def tokens(self, now: float) -> float:
        """Tokens in the bucket now (for tests and /config_dump-like views)."""
        self._refill(_ns(now))
        return self.level / self._unit

    def __repr__(self) -> str:
        rate = Fraction(self._p * _NS, self._unit)
        return (
            f"TokenBucket({float(rate):g}/s burst={self.burst} level={self.level / self._unit:.3f})"
        )


def pushback_ms(wait_ns: int) -> int:
    """The wait as grpc-retry-pushback-ms, rounded up: a retry after it finds a token."""
    return max(1, -(-wait_ns // _MS))


def refusal(wait_ns: int, what: str) -> Refusal:
    ms = pushback_ms(wait_ns)
    return Refusal(
        "rate_limited",
        f"rate limited by the sidecar: {what}; the next token is there in {ms} ms "
        "(grpc-retry-pushback-ms)",
        "RESOURCE_EXHAUSTED",
        ms,
    )


def method_matches(pattern: str, method: str) -> bool:
    """`*`, `/package.Service/*` or a full method path."""
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return method.startswith(pattern[:-1]) and "/" not in method[len(pattern) - 1 :]
    return method == pattern


class InboundLimits:
    """`inbound.rate_limits`: the first rule whose method pattern matches applies."""

    def __init__(
        self, rules: Sequence[InboundRateLimit], now: float, buckets_per_rule: int = 10_000
    ) -> None:
        self.rules = list(rules)
        self.started = now
        self.buckets_per_rule = buckets_per_rule
        self._buckets: list[OrderedDict[str | None, TokenBucket]] = [OrderedDict() for _ in rules]
        self._rule_of: dict[str, int] = {}  # method -> rule index (-1: none), cached

    def _rule(self, method: str) -> int:
        index = self._rule_of.get(method)
        if index is None:
            index = next(
                (i for i, r in enumerate(self.rules) if method_matches(r.method, method)), -1
            )
            if len(self._rule_of) < 10_000:  # methods are few; a scanner's junk is not kept
                self._rule_of[method] = index
        return index

    def check(self, method: str, caller: str | None, now: float) -> Refusal | None:
        """None: go ahead (a token was taken, or no rule applies); else the refusal."""
        index = self._rule(method)
        if index < 0:
            return None
        buckets = self._buckets[index]
        rule = self.rules[index]
        if not rule.per_caller:
            caller = None
        bucket = buckets.get(caller)
        if bucket is None:
            bucket = buckets[caller] = TokenBucket(rule.tokens_per_s, rule.burst, now)
            if len(buckets) > self.buckets_per_rule:
                buckets.popitem(last=False)  # the least recently used caller's
        else:
            buckets.move_to_end(caller)
        wait = bucket.take(now)
        if wait == 0:
            return None
        who = f" per caller ({caller or 'plaintext callers'})" if rule.per_caller else ""
        return refusal(
            wait, f"calls matching {rule.method} are limited to {rule.tokens_per_s:g}/s{who} "
            f"(inbound.rate_limits, burst {rule.burst})",
        )  # fmt: skip


class UpstreamLimit:
    """`upstreams.NAME.rate_limit`: one bucket for every call to the upstream, whichever
    route it came by. Retries take no token: the limit counts calls as the caller sees
    them (a retry storm is the retry budget's to stop)."""

    __slots__ = ("bucket", "what")

    def __init__(self, name: str, spec: TokenBucketConfig, now: float) -> None:
        self.bucket = TokenBucket(spec.tokens_per_s, spec.burst, now)
        self.what = (
            f"calls to upstream {name} are limited to {spec.tokens_per_s:g}/s "
            f"(upstreams.{name}.rate_limit, burst {spec.burst})"
        )

    def check(self, method: str, caller: str | None, now: float) -> Refusal | None:
        wait = self.bucket.take(now)
        return None if wait == 0 else refusal(wait, self.what)

    def __repr__(self) -> str:
        return f"UpstreamLimit({self.bucket!r})"
