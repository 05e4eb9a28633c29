"""Outbound `routes` (sidecar/route_rules.py): header matchers, first match wins, the
fallback to grpc_services, weighted splits, and what `sidecar check` refuses."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.config import ConfigError, HeaderMatch, parse_config
from sidecar.h2relay.request import prepare, prepare_split
from sidecar.route_rules import HeaderMatcher, HeaderRoutes, WeightedSplit

SVC = "test.echo.v1.Echo"
METHOD = f"/{SVC}/Unary"


def matcher(**spec: Any) -> HeaderMatcher:
    return HeaderMatcher(HeaderMatch(name="x-who", **spec))


def hdrs(*pairs: tuple[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((n.encode(), v.encode()) for n, v in pairs)


@pytest.mark.parametrize(
    ("spec", "headers", "expected"),
    [
        ({"exact": "ann"}, [("x-who", "ann")], True),
        ({"exact": "ann"}, [("x-who", "anne")], False),
        ({"exact": "ann"}, [], False),
        ({"exact": "ann", "invert": True}, [], True),
        ({"prefix": "an"}, [("x-who", "anne")], True),
        ({"prefix": "an"}, [("x-who", "bo")], False),
        ({"regex": "a[nm]+e?"}, [("x-who", "anne")], True),
        ({"regex": "a[nm]+"}, [("x-who", "anne")], False),  # the whole value must match
        ({"present": True}, [("x-who", "")], True),
        ({"present": True}, [("x-other", "1")], False),
        ({"present": False}, [("x-other", "1")], True),
        ({"exact": "a,b"}, [("x-who", "a"), ("x-who", "b")], True),  # values joined
        ({"prefix": "an", "invert": True}, [("x-who", "anne")], False),
    ],
)
def test_header_matcher(
    spec: dict[str, Any], headers: list[tuple[str, str]], expected: bool
) -> None:
    """Each matcher kind, absent headers, repeated values, and invert."""
    assert matcher(**spec).matches(hdrs(*headers)) is expected


def test_regex_is_linear_time_on_a_hostile_value() -> None:
    """(a+)+$ on 'aaaa…b' backtracks exponentially in Python's re; RE2 answers at once."""
    m = matcher(regex="(a+)+$")
    started = time.process_time()
    assert not m.matches(hdrs(("x-who", "a" * 5000 + "b")))
    assert time.process_time() - started < 1.0


def config(routes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    ups = {n: {"endpoints": [f"127.0.0.1:{p}"]} for n, p in (("a", 1), ("b", 2), ("c", 3))}
    ups["a"]["grpc_services"] = [SVC]
    return {"upstreams": ups, "routes": routes, **extra}


def router(routes: list[dict[str, Any]]) -> Any:
    from sidecar.app import Sidecar

    return Sidecar(parse_config(config(routes, outbound={"listen": "127.0.0.1:0"})))


def route_name(side: Any, headers: list[tuple[str, str]], method: str = METHOD) -> str | None:
    block = hdrs(
        (":method", "POST"), (":path", method), ("content-type", "application/grpc"), *headers
    )
    prepared = prepare(block, side.outbound_route)
    return None if prepared.route is None else str(prepared.route.name)


async def test_first_match_wins_and_falls_back_to_grpc_services() -> None:
    """Rules in order: header rules, a method rule, then grpc_services when none match."""
    side = router(
        [
            {"match": {"headers": [{"name": "x-canary", "exact": "1"}]}, "upstream": "b"},
            {"match": {"method": f"/{SVC}/Other"}, "upstream": "c"},
            {"match": {"headers": [{"name": "x-canary", "present": True}]}, "upstream": "c"},
        ]
    )
    assert route_name(side, [("x-canary", "1")]) == "b"
    assert route_name(side, [("x-canary", "2")]) == "c"
    assert route_name(side, []) == "a"  # grpc_services
    assert route_name(side, [("x-canary", "1")], f"/{SVC}/Other") == "b"
    assert route_name(side, [], f"/{SVC}/Other") == "c"
    assert route_name(side, [], "/no.such.Service/M") is None


async def test_a_rule_sets_its_own_timeout_and_retries() -> None:
    """A rule's timeout_ms / retries replace its upstream's; the limits are shared."""
    side = router(
        [
            {
                "match": {"service": SVC, "headers": [{"name": "x-slow", "present": True}]},
                "upstream": "a",
                "timeout_ms": 9000,
                "per_try_timeout_ms": 300,
                "retries": {"max_attempts": 2},
            }
        ]
    )
    block = hdrs((":method", "POST"), (":path", METHOD), ("content-type", "application/grpc"))
    slow = prepare((*block, (b"x-slow", b"")), side.outbound_route).route
    plain = prepare(block, side.outbound_route).route
    assert (slow.default_timeout_s, slow.per_try_timeout_s) == (9.0, 0.3)
    assert (plain.default_timeout_s, plain.per_try_timeout_s) == (1.0, None)
    assert slow.calls.policy.retry is not None and plain.calls.policy.retry is None
    assert slow.calls.policy.limits is plain.calls.policy.limits


async def test_a_split_tail_reading_a_rule_header_is_prepared_afresh() -> None:
    """A header block split by the decoder reuses its head's route unless a rule reads
    a header of the tail (then the whole block is prepared again)."""
    side = router(
        [{"match": {"headers": [{"name": "x-request-id", "prefix": "b"}]}, "upstream": "b"}]
    )
    head = hdrs((":method", "POST"), (":path", METHOD), ("content-type", "application/grpc"))
    base = prepare(head, side.outbound_route)
    assert isinstance(base.rules, HeaderRoutes) and base.route.name == "a"
    assert prepare_split(base, hdrs(("x-request-id", "b1")), side.outbound_route) is None
    assert prepare_split(base, hdrs(("grpc-timeout", "1S")), side.outbound_route) is not None


def test_smooth_weighted_round_robin_is_exact_and_interleaved() -> None:
    """95/5 over 10,000 calls: exactly 9,500 / 500, and never two canary picks in a row."""
    split = WeightedSplit(["stable", "canary"], [95, 5])
    picks = [split.pick() for _ in range(10_000)]
    assert Counter(picks) == {"stable": 9_500, "canary": 500}
    assert all(not (x == y == "canary") for x, y in itertools.pairwise(picks))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=6).map(
        lambda ws: ws if sum(ws) > 0 else [1, *ws]
    ),
    st.integers(min_value=1, max_value=3000),
)
def test_any_run_of_the_round_robin_keeps_every_share_within_a_few_calls(
    weights: list[int], n: int
) -> None:
    """Whatever the weights and the run's length, each backend's count is within as many
    calls of its exact share as there are backends."""
    split = WeightedSplit(list(range(len(weights))), weights)
    got = Counter(split.pick() for _ in range(n))
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(got[i] - n * w / total) <= len(weights), (weights, n, got)


def test_hash_on_is_sticky_and_proportional() -> None:
    """hash_on: one key, one backend every time; 10,000 distinct ids within ±1% of 95/5."""
    split = WeightedSplit(["stable", "canary"], [95, 5], hash_on="x-request-id")
    ids = [f"req-{i:05d}".encode() for i in range(10_000)]
    first = [split.pick(k) for k in ids]
    assert first == [split.pick(k) for k in ids]
    share = Counter(first)["canary"] / len(ids)
    assert abs(share - 0.05) <= 0.01, share
    assert split.pick(None) in ("stable", "canary")  # no header: the round robin


async def test_split_picks_per_call_not_per_header_block() -> None:
    """The same header block (one cached Prepared) still splits 3:1 across calls."""
    side = router([{"match": {"service": SVC}, "split": [
        {"upstream": "a", "weight": 3}, {"upstream": "b", "weight": 1}]}])  # fmt: skip
    block = hdrs((":method", "POST"), (":path", METHOD), ("content-type", "application/grpc"))
    prepared = prepare(block, side.outbound_route)
    got = Counter(prepared.route.split.choose(prepared).route.name for _ in range(400))
    assert got == {"a": 300, "b": 100}
    assert prepared.route.split is not None  # the shared one is untouched


@pytest.mark.parametrize(
    ("routes", "key", "reason"),
    [
        ([{"match": {"headers": [{"name": "x", "regex": "(a"}]}, "upstream": "a"}],
         "routes.0.match.headers.0.regex", "not an RE2 regular expression: missing ): (a"),
        ([{"match": {"headers": [{"name": "x", "regex": "(?=a)"}]}, "upstream": "a"}],
         "routes.0.match.headers.0.regex", "not an RE2 regular expression: invalid perl operator: (?="),
        ([{"match": {"headers": [{"name": "x", "suffix": "a"}]}, "upstream": "a"}],
         "routes.0.match.headers.0.suffix", "unknown key"),
        ([{"match": {"headers": [{"name": "x", "exact": "a", "prefix": "a"}]}, "upstream": "a"}],
         "routes.0.match.headers.0", "a header match needs exactly one of exact, prefix, regex, present (got exact, prefix)"),
        ([{"match": {"headers": [{"name": "X-Up", "present": True}]}, "upstream": "a"}],
         "routes.0.match.headers.0.name", "header names are lowercase in HTTP/2 (RFC 9113 §8.2.1)"),
        ([{"split": [{"upstream": "a", "weight": 0}, {"upstream": "b", "weight": 0}]}],
         "routes.0.split", "the weights sum to 0, so no call could go anywhere"),
        ([{"split": [{"upstream": "a", "weight": -1}]}],
         "routes.0.split.0.weight", "Input should be greater than or equal to 0"),
        ([{"upstream": "nope"}], "routes.0.upstream", "no upstream named 'nope'"),
        ([{"upstream": "a"}, {"split": [{"upstream": "zz", "weight": 1}]}],
         "routes.1.split.0.upstream", "no upstream named 'zz'"),
        ([{"upstream": "a", "split": [{"upstream": "b", "weight": 1}]}],
         "routes.0", "a route needs exactly one of `upstream` and `split`"),
        ([{"upstream": "a", "hash_on": "x-request-id"}],
         "routes.0.hash_on", "only a route with a `split` hashes"),
        ([{"match": {"method": "Echo/Unary"}, "upstream": "a"}],
         "routes.0.match.method", "'Echo/Unary' is not a full method path /package.Service/Method"),
        ([{"upstream": "a", "mirror": {"upstream": "a"}}],
         "routes.0.mirror.upstream", "'a' already takes this route's calls; a shadow must be another upstream"),
        ([{"upstream": "a", "mirror": {"upstream": "q"}}],
         "routes.0.mirror.upstream", "no upstream named 'q'"),
        ([{"upstream": "a", "mirror": {"upstream": "b", "percent": 101}}],
         "routes.0.mirror.percent", "Input should be less than or equal to 100"),
    ],
)  # fmt: skip
def test_check_refuses_bad_routes_with_key_and_reason(
    routes: list[dict[str, Any]], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config(routes))
    assert (err.value.key, err.value.reason) == (key, reason)
