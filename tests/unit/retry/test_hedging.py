"""The hedging schedule (gRPC A6 "Hedging Policy"): when copies go, what a failed copy
means, the budget, and the config that `sidecar check` refuses. Pure: times are given."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config import ConfigError, HedgingPolicy, parse_config
from sidecar.retry.hedging import ANSWER, SEND, WAIT, HedgeSchedule, Hedging


def schedule(**policy: Any) -> HedgeSchedule:
    config = HedgingPolicy(**{"max_attempts": 3, "hedging_delay_ms": 20, **policy})
    return HedgeSchedule(Hedging("unit", config))


def test_a_copy_goes_every_delay_up_to_max_attempts() -> None:
    """A6's example: each copy schedules the next one a delay later; the last of
    `max_attempts` schedules none."""
    s = schedule(max_attempts=4, hedging_delay_ms=500)
    assert s.on_sent(0.0) == pytest.approx(0.5)
    assert s.on_sent(0.5) == pytest.approx(1.0)
    assert s.on_sent(1.0) == pytest.approx(1.5)
    assert s.on_sent(1.5) is None
    assert not s.more()


def test_a_zero_delay_sends_every_copy_at_once() -> None:
    s = schedule(hedging_delay_ms=0)
    assert s.on_sent(3.0) == 3.0
    assert s.on_sent(3.0) == 3.0
    assert s.on_sent(3.0) is None


@pytest.mark.parametrize(
    ("status", "peer_error", "verdict"),
    [
        ("INVALID_ARGUMENT", None, ANSWER),  # not listed: fatal
        ("UNAVAILABLE", None, ANSWER),  # not listed either: the list is empty by default
        ("UNAVAILABLE", "connect_failed", SEND),  # no app saw the copy: always safe
        ("RESOURCE_EXHAUSTED", "overloaded", SEND),  # the peer sidecar shed it
    ],
)
def test_an_unlisted_status_is_fatal(status: str, peer_error: str | None, verdict: int) -> None:
    s = schedule()
    s.on_sent(0.0)
    assert s.failed(status, peer_error, None, 0.005)[0] == verdict


def test_a_non_fatal_status_sends_the_next_copy_at_once() -> None:
    s = schedule(non_fatal_status_codes=["UNAVAILABLE", "ABORTED"])
    s.on_sent(0.0)
    assert s.failed("ABORTED", None, None, 0.004) == (SEND, 0.004)
    assert s.on_sent(0.004) == pytest.approx(0.024)  # the delay runs on from this copy


def test_a_pushback_delay_replaces_the_wait_for_the_next_copy() -> None:
    s = schedule(non_fatal_status_codes=["UNAVAILABLE"])
    s.on_sent(0.0)
    verdict, when = s.failed("UNAVAILABLE", None, b"150", 0.01)
    assert verdict == SEND
    assert when == pytest.approx(0.16)


@pytest.mark.parametrize("pushback", [b"-1", b"soon", "1.5"])
def test_a_pushback_that_says_stop_ends_the_copies(pushback: bytes | str) -> None:
    """Negative or garbage: no more copies; the call waits for those in flight."""
    s = schedule(non_fatal_status_codes=["UNAVAILABLE"])
    s.on_sent(0.0)
    assert s.failed("UNAVAILABLE", None, pushback, 0.01) == (WAIT, 0.0)
    assert not s.more()


def test_a_non_fatal_status_after_the_last_copy_waits() -> None:
    s = schedule(max_attempts=2, non_fatal_status_codes=["UNAVAILABLE"])
    s.on_sent(0.0)
    s.on_sent(0.02)
    assert s.failed("UNAVAILABLE", None, None, 0.03) == (WAIT, 0.0)


def test_a_fatal_status_wins_over_a_pushback() -> None:
    s = schedule()
    s.on_sent(0.0)
    assert s.failed("PERMISSION_DENIED", None, b"10", 0.01)[0] == ANSWER


def test_stop_ends_the_schedule() -> None:
    s = schedule()
    s.on_sent(0.0)
    s.stop()
    assert not s.more()


def test_copies_after_the_first_take_from_the_budget() -> None:
    """min_retries_per_s 0.1 over a 10 s window: one copy, then none until calls
    deposit (100% of each call)."""
    config = HedgingPolicy(
        max_attempts=2, budget_percent=100, min_retries_per_s=0.1, budget_window_s=10
    )
    policy = Hedging("unit-budget", config)
    assert policy.allow_hedge(0.0)
    assert not policy.allow_hedge(0.1)
    policy.on_call(0.2)
    assert policy.allow_hedge(0.3)
    assert not policy.allow_hedge(0.4)


def upstream(**spec: Any) -> dict[str, Any]:
    return {"upstreams": {"u": {"endpoints": ["127.0.0.1:1"], **spec}}}


@pytest.mark.parametrize(
    ("spec", "key", "reason"),
    [
        (
            {"hedging_policy": {"max_attempts": 2}, "retries": {}},
            "upstreams.u.hedging_policy",
            "a call is either retried or hedged",
        ),
        (
            {"hedging_policy": {"max_attempts": 2}, "per_try_timeout_ms": 50},
            "upstreams.u.hedging_policy",
            "hedged attempts run to the call's deadline",
        ),
        ({"hedging_policy": {}}, "upstreams.u.hedging_policy.max_attempts", "required"),
        (
            {"hedging_policy": {"max_attempts": 1}},
            "upstreams.u.hedging_policy.max_attempts",
            "greater than or equal to 2",
        ),
        (
            {"hedging_policy": {"max_attempts": 6}},
            "upstreams.u.hedging_policy.max_attempts",
            "less than or equal to 5",
        ),
        (
            {"hedging_policy": {"max_attempts": 2, "hedging_delay_ms": -1}},
            "upstreams.u.hedging_policy.hedging_delay_ms",
            "greater than or equal to 0",
        ),
        (
            {"hedging_policy": {"max_attempts": 2, "non_fatal_status_codes": ["SLOW"]}},
            "upstreams.u.hedging_policy.non_fatal_status_codes",
            "'SLOW' is not a gRPC status name",
        ),
    ],
)
def test_check_refuses_bad_hedging(spec: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(upstream(**spec))
    assert err.value.key == key
    assert reason in err.value.reason


def test_a_hedging_policy_is_accepted_with_its_defaults() -> None:
    config = parse_config(upstream(hedging_policy={"max_attempts": 3}))
    policy = config.upstreams["u"].hedging_policy
    assert policy is not None
    assert (policy.hedging_delay_ms, policy.non_fatal_status_codes) == (0.0, [])
    assert policy.budget_percent == 20.0


def routed(route: dict[str, Any], **spec: Any) -> dict[str, Any]:
    config = upstream(**spec)
    config["routes"] = [{"upstream": "u", **route}]
    return config


@pytest.mark.parametrize(
    ("route", "spec"),
    [
        ({"hedging_policy": {"max_attempts": 2}, "retries": {}}, {}),  # both on the route
        ({"hedging_policy": {"max_attempts": 2}, "per_try_timeout_ms": 50}, {}),
        ({"hedging_policy": {"max_attempts": 2}}, {"per_try_timeout_ms": 50}),  # inherited
        ({"per_try_timeout_ms": 50}, {"hedging_policy": {"max_attempts": 2}}),  # inherited
    ],
)
def test_check_refuses_a_hedged_route_with_retries_or_per_try(
    route: dict[str, Any], spec: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(routed(route, **spec))
    assert err.value.key == "routes.0.hedging_policy"


def test_a_route_may_hedge_an_upstream_that_retries_and_retry_one_that_hedges() -> None:
    """The route's policy replaces the upstream's: never both on one call."""
    parse_config(routed({"hedging_policy": {"max_attempts": 2}}, retries={}))
    parse_config(routed({"retries": {}}, hedging_policy={"max_attempts": 2}))
