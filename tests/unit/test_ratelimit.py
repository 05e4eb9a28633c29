"""Local rate limits (sidecar/ratelimit.py) on a fake clock: exact to the token over a
10 s run, the pushback a refused call gets, method patterns, and the config's checks."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config import ConfigError, InboundRateLimit, TokenBucketConfig, parse_config
from sidecar.ratelimit import InboundLimits, TokenBucket, UpstreamLimit, method_matches


@pytest.mark.parametrize(
    ("rate", "burst", "step_s"),
    [(100, 10, 0.001), (3, 1, 0.0007), (0.5, 2, 0.01), (7.3, 5, 0.0013), (1000, 1, 0.0001)],
)
def test_exact_to_the_token_over_ten_seconds(rate: float, burst: int, step_s: float) -> None:
    """Calls far faster than the rate for 10 s on a fake clock: exactly `burst` plus
    floor(10 s * rate) get a token (a float level would drift off by one)."""
    bucket = TokenBucket(rate, burst, now=0.0)
    taken = 0
    i = 0
    while (t := i * step_s) <= 10.0:
        taken += bucket.take(t) == 0
        i += 1
    last = (i - 1) * step_s
    from fractions import Fraction

    expected = burst + int(Fraction(str(rate)) * Fraction(str(round(last, 9))))
    assert taken == expected, (taken, expected)


def test_pushback_is_when_the_next_token_is_there() -> None:
    """Refused, the wait is exact: taking at that moment succeeds, a nanosecond before fails."""
    bucket = TokenBucket(4, 1, now=0.0)
    assert bucket.take(0.0) == 0
    wait = bucket.take(0.1)
    assert wait == 150_000_000  # the next token at 0.25 s
    assert bucket.take(0.25 - 1e-9) > 0
    assert bucket.take(0.25) == 0


def test_inbound_rules_first_matching_pattern_applies() -> None:
    """Per method pattern: a full path, a service's methods, `*`; the first match wins,
    and the refusal is RESOURCE_EXHAUSTED, rate_limited, with the pushback in ms."""
    limits = InboundLimits(
        [
            InboundRateLimit(method="/a.B/Slow", tokens_per_s=1, burst=1),
            InboundRateLimit(method="/a.B/*", tokens_per_s=10, burst=2),
            InboundRateLimit(method="*", tokens_per_s=1000, burst=1000),
        ],
        now=0.0,
    )
    assert limits.check("/a.B/Slow", None, 0.0) is None
    refused = limits.check("/a.B/Slow", None, 0.0)
    assert refused is not None
    assert (refused.status, refused.reason, refused.pushback_ms) == (
        "RESOURCE_EXHAUSTED",
        "rate_limited",
        1000,
    )
    assert "/a.B/Slow" in refused.message
    assert limits.check("/a.B/Fast", None, 0.0) is None
    assert limits.check("/a.B/Other", None, 0.0) is None  # shares /a.B/*'s bucket
    fast = limits.check("/a.B/Fast", None, 0.0)
    assert fast is not None and fast.pushback_ms == 100
    assert limits.check("/c.D/M", None, 0.0) is None  # `*`


ONE = "spiffe://example.net/site/lon3/service/one"
TWO = "spiffe://example.net/site/lon3/service/two"


def test_per_caller_rule_gives_each_identity_a_bucket_of_its_own() -> None:
    """per_caller: the key is (rule, caller identity); callers do not share tokens, and
    plaintext callers (None) share one bucket."""
    limits = InboundLimits([InboundRateLimit(tokens_per_s=1, burst=1, per_caller=True)], 0.0)
    assert limits.check("/a.B/M", ONE, 0.0) is None
    assert limits.check("/a.B/M", TWO, 0.0) is None
    refused = limits.check("/a.B/M", ONE, 0.0)
    assert refused is not None and ONE in refused.message
    assert limits.check("/a.B/M", None, 0.0) is None
    assert limits.check("/a.B/M", None, 0.0) is not None


def test_a_rule_without_per_caller_is_shared_by_every_caller() -> None:
    limits = InboundLimits([InboundRateLimit(tokens_per_s=1, burst=1)], now=0.0)
    assert limits.check("/a.B/M", ONE, 0.0) is None
    assert limits.check("/a.B/M", TWO, 0.0) is not None


def test_the_caller_buckets_kept_are_bounded() -> None:
    limits = InboundLimits(
        [InboundRateLimit(tokens_per_s=1, burst=1, per_caller=True)], 0.0, buckets_per_rule=3
    )
    for i in range(10):
        limits.check("/a.B/M", f"caller-{i}", 0.0)
    assert len(limits._buckets[0]) == 3


def test_upstream_limit_names_the_key_to_change() -> None:
    limit = UpstreamLimit("playlist", TokenBucketConfig(tokens_per_s=2, burst=1), now=0.0)
    assert limit.check("/m.P/Get", None, 0.0) is None
    refused = limit.check("/m.P/Get", None, 0.1)
    assert refused is not None and refused.pushback_ms == 400
    assert "upstreams.playlist.rate_limit" in refused.message


@pytest.mark.parametrize(
    ("pattern", "method", "expected"),
    [
        ("*", "/a.B/C", True),
        ("/a.B/*", "/a.B/C", True),
        ("/a.B/*", "/a.BB/C", False),
        ("/a.B/C", "/a.B/C", True),
        ("/a.B/C", "/a.B/CD", False),
    ],
)
def test_method_patterns(pattern: str, method: str, expected: bool) -> None:
    assert method_matches(pattern, method) is expected


@pytest.mark.parametrize(
    ("cfg", "key", "reason"),
    [
        ({"inbound": {"rate_limits": [{"tokens_per_s": 0}]}},
         "inbound.rate_limits.0.tokens_per_s", "Input should be greater than 0"),
        ({"inbound": {"rate_limits": [{"tokens_per_s": 1, "burst": 0}]}},
         "inbound.rate_limits.0.burst", "Input should be greater than or equal to 1"),
        ({"inbound": {"rate_limits": [{"tokens_per_s": 1, "method": "a.B/C"}]}},
         "inbound.rate_limits.0.method",
         "'a.B/C' is not a method pattern: /package.Service/Method, /package.Service/* or *"),
        ({"inbound": {"rate_limits": [{"tokens_per_s": 1, "method": "/a.B/Get*"}]}},
         "inbound.rate_limits.0.method", "'/a.B/Get*': `*` stands only for a whole method name, or alone"),
        ({"inbound": {"rate_limits": [{"tokens_per_s": 1, "per_callers": True}]}},
         "inbound.rate_limits.0.per_callers", "unknown key"),
        ({"upstreams": {"u": {"rate_limit": {"burst": 3}}}},
         "upstreams.u.rate_limit.tokens_per_s", "Field required"),
    ],
)  # fmt: skip
def test_check_refuses_bad_rate_limits(cfg: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert (err.value.key, err.value.reason) == (key, reason)
