"""Endpoint addresses and attempt classification."""

import pytest

from sidecar.endpoint import Endpoint, parse_hostport
from sidecar.outcome import Outcome, caller_gone, classify


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:443", ("::1", 443)), ("h:0", ("h", 0))],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["", ":80", "h:x", "h:70000", "::1:80", "[::1"])
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(text)


def test_ipv6_address_is_bracketed() -> None:
    assert Endpoint("::1", 8080).address == "[::1]:8080"
    assert Endpoint("10.0.0.1", 1).key == ("10.0.0.1", 1)


@pytest.mark.parametrize(
    ("status", "peer_error", "outcome"),
    [
        ("OK", None, Outcome.SUCCESS),
        ("NOT_FOUND", None, Outcome.SUCCESS),
        ("INVALID_ARGUMENT", None, Outcome.SUCCESS),
        ("INTERNAL", None, Outcome.SUCCESS),
        ("INTERNAL", "connect_failed", Outcome.UNAVAILABLE),
        ("UNKNOWN", "internal", Outcome.PEER_ERROR),
        ("UNAVAILABLE", None, Outcome.UNAVAILABLE),
        ("UNAVAILABLE", "overloaded", Outcome.OVERLOADED),
        ("DEADLINE_EXCEEDED", None, Outcome.TIMEOUT),
        ("CANCELLED", None, Outcome.CANCELLED),
    ],
)
def test_only_sickness_counts_as_failure(
    status: str, peer_error: str | None, outcome: Outcome
) -> None:
    assert classify(status, peer_error) is outcome


def test_cancel_is_not_a_failure() -> None:
    assert not Outcome.CANCELLED.is_failure
    assert Outcome.TIMEOUT.is_failure


@pytest.mark.parametrize(
    ("now", "deadline", "outcome"),
    [
        (10.0, None, Outcome.CANCELLED),  # no deadline: the caller lost interest
        (10.5, 12.0, Outcome.CANCELLED),  # well before the deadline
        (11.97, 12.0, Outcome.TIMEOUT),  # within the grpc-timeout rounding of it
        (12.3, 12.0, Outcome.TIMEOUT),  # after it
    ],
)
def test_a_caller_gone_at_its_deadline_is_a_timeout(
    now: float, deadline: float | None, outcome: Outcome
) -> None:
    """A cancel that arrives as the deadline runs out counts against the endpoint."""
    assert caller_gone(10.0, deadline, now) is outcome


def test_overload_is_a_failure_that_does_not_trip_breakers() -> None:
    """Shedding feeds latency scores and budgets, not ejection."""
    assert Outcome.OVERLOADED.is_failure
    assert not Outcome.OVERLOADED.trips_breaker
    assert Outcome.UNAVAILABLE.trips_breaker
