"""The soak tier (tests/soak/soak.py): mixed traffic through a sidecar pair with endpoints
churning in DNS and breakers tripping, and no growth of RSS, open fds or asyncio tasks
once warm. `make test` runs 60 s (SOAK_S); `make soak` runs 600 s."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.harness import leaked
from tests.soak.soak import BOUNDS, run

SOAK_S = float(os.environ.get("SOAK_S", "60"))

pytestmark = pytest.mark.timeout(SOAK_S + 180)


def test_nothing_grows_once_warm(tmp_path: Path) -> None:
    soak, summary = run(tmp_path, SOAK_S)
    print(f"\n[soak {SOAK_S:.0f} s] calls: {summary['calls']}, outcomes: {summary['outcomes']}")
    print(f"[soak] slopes per minute after {soak.warmup_s:.0f} s: {summary['slopes_per_minute']}")
    print(f"[soak] events: {summary['events']}")
    assert not leaked(), "processes of the soak left behind"
    # the traffic was what it says: every kind ran, the good ones succeeded
    outcomes = summary["outcomes"]
    for kind in ("unary", "server", "client", "bidi"):
        ok = outcomes.get(f"{kind}: OK", 0)
        total = sum(n for k, n in outcomes.items() if k.startswith(f"{kind}: "))
        assert ok >= 0.9 * total and ok > 0, (kind, outcomes)
    assert outcomes.get("cancel: cancelled (as meant)", 0) > 0, outcomes
    assert outcomes.get("deadline: DEADLINE_EXCEEDED", 0) > 0, outcomes
    assert summary["breaker_trips"] > 0, "no breaker tripped"
    events = " ".join(e for _, e in summary["events"])
    assert "registered" in events and "fails every call" in events, events
    if SOAK_S >= 45:
        assert "drained and stopped" in events, events
    # sampled every second all along
    for who in ("caller", "instance"):
        assert sum(1 for s in soak.samples if s.who == who) >= 0.8 * SOAK_S, who
    for who, slopes in summary["slopes_per_minute"].items():
        for series, bound in BOUNDS.items():
            assert slopes[series] <= bound, (who, series, slopes[series], bound)
