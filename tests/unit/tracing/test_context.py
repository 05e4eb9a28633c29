"""W3C trace context on a call: continued when valid, started when missing or invalid,
passed upstream with the attempt's span as parent; parent-based sampling."""

from __future__ import annotations

import pytest
from hpack import Decoder

from sidecar.tracing.context import begin, bound, parse

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = b"00f067aa0ba902b7"


def test_a_valid_traceparent_is_continued_with_its_flag() -> None:
    sampled = begin(b"00-" + TRACE + b"-" + PARENT + b"-01", bound(0.0))
    assert (sampled.trace_id, sampled.parent_id, sampled.sampled) == (TRACE, PARENT, True)
    unsampled = begin(b"00-" + TRACE + b"-" + PARENT + b"-00", bound(1.0))
    assert not unsampled.sampled  # the caller's decision wins over the ratio


def test_upstream_traceparent_names_this_hops_span_as_parent() -> None:
    trace = begin(b"00-" + TRACE + b"-" + PARENT + b"-01", bound(0.0))
    span = b"a" * 16
    assert trace.upstream(span) == b"00-" + TRACE + b"-" + span + b"-01"
    assert parse(trace.upstream(span)) == (TRACE, span, True)
    # the same as an encoded header field, as the call appends it to the upstream block
    field = trace.upstream_field(span)
    assert Decoder().decode(field, raw=True) == [(b"traceparent", trace.upstream(span))]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"00-" + TRACE + b"-" + PARENT,  # no flags
        b"00-" + TRACE.upper() + b"-" + PARENT + b"-01",  # upper case
        b"00-" + b"0" * 32 + b"-" + PARENT + b"-01",  # zero trace id
        b"00-" + TRACE + b"-" + b"0" * 16 + b"-01",  # zero parent id
        b"ff-" + TRACE + b"-" + PARENT + b"-01",  # forbidden version
        b"00-" + TRACE + b"-" + PARENT + b"-01-extra",  # version 00 is exactly 55
        b"00-" + TRACE[:-1] + b"g-" + PARENT + b"-01",  # not hex
        b"00-" + TRACE + b"_" + PARENT + b"-01",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(value: bytes) -> None:
    assert parse(value) is None
    trace = begin(value, bound(1.0))
    assert trace.parent_id is None and trace.trace_id != TRACE and len(trace.trace_id) == 32
    assert trace.sampled  # ratio 1


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    assert parse(b"01-" + TRACE + b"-" + PARENT + b"-03-what-ever") == (TRACE, PARENT, True)


def test_a_new_trace_is_sampled_by_the_ratio() -> None:
    assert not any(begin(None, bound(0.0)).sampled for _ in range(200))
    assert all(begin(None, bound(1.0)).sampled for _ in range(200))
    share = sum(begin(None, bound(0.25)).sampled for _ in range(4000)) / 4000
    assert 0.18 < share < 0.32
    ids = {begin(None, bound(0.0)).trace_id for _ in range(1000)}
    assert len(ids) == 1000
