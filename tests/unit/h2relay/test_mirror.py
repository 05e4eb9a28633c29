"""A route's mirror (sidecar/h2relay/mirror.py) before any I/O: which calls are copied,
the in-flight bound that sheds copies first, and how an unsent copy is counted."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import CollectorRegistry

from sidecar.config import MirrorConfig
from sidecar.h2relay.mirror import Mirror
from sidecar.metrics import PlaneMetrics


def mirror(**spec: Any) -> tuple[Mirror, CollectorRegistry]:
    registry = CollectorRegistry()
    counter = PlaneMetrics(registry).mirror_calls
    m = Mirror("shadow", None, MirrorConfig(upstream="shadow", **spec), random.Random(7), counter)
    return m, registry


def count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value(
        "sidecar_mirror_calls_total", {"upstream": "shadow", "result": result}
    )
    return value or 0.0


def test_percent_samples_that_share_of_calls() -> None:
    m, _ = mirror(percent=25, max_in_flight=10_000)
    copies = [m.copy(None, b"", b"", 1 << 20) for _ in range(4000)]
    share = sum(c is not None for c in copies) / 4000
    assert 0.22 < share < 0.28, share


def test_beyond_max_in_flight_a_copy_is_shed_and_counted() -> None:
    m, registry = mirror(max_in_flight=2)
    held = [m.copy(None, b"", b"", 1 << 20) for _ in range(5)]
    assert [c is not None for c in held] == [True, True, False, False, False]
    assert count(registry, "shed") == 3
    first = held[0]
    assert first is not None
    first.abandon()  # the caller left before its request was whole: a slot frees
    assert m.in_flight == 1 and count(registry, "abandoned") == 1
    assert m.copy(None, b"", b"", 1 << 20) is not None


def test_a_request_over_max_request_bytes_is_not_copied() -> None:
    m, registry = mirror(max_request_bytes=10)
    shadow = m.copy(None, b"", b"", 1 << 20)
    assert shadow is not None
    shadow.feed([b"x" * 6], False)
    shadow.feed([b"x" * 6], True)  # 12 bytes: over, and never sent
    assert shadow.stream is None and m.in_flight == 0
    assert count(registry, "too_large") == 1
    shadow.abandon()  # already counted: nothing more
    assert count(registry, "abandoned") == 0
