"""Assertions every chaos scenario makes, with messages that point at the timeline.

Pure. "No UNKNOWN, no hang": every failed call carries a clear status, and no call
outlives its deadline by more than `slack_s`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sidecar.chaos.measure import CLEAR_FAILURES, Call


def clear_failures(calls: Sequence[Call], folder: Path, slack_s: float = 0.25) -> None:
    unknown = [c for c in calls if c.status == "UNKNOWN"]
    assert not unknown, f"{len(unknown)} calls ended UNKNOWN, e.g. {unknown[0]} (see {folder})"
    hung = [c for c in calls if c.status == "HUNG"]
    assert not hung, f"{len(hung)} calls hung past deadline + 2 s, e.g. {hung[0]} (see {folder})"
    odd = [c for c in calls if c.status not in CLEAR_FAILURES and c.status != "OK"]
    assert not odd, (
        f"{len(odd)} calls ended with an unexpected status, e.g. {odd[0]} (see {folder})"
    )
    late = [c for c in calls if c.latency > c.deadline + slack_s]
    assert not late, (
        f"{len(late)} calls outlived their deadline by more than {slack_s * 1000:.0f} ms, "
        f"worst {max(c.latency for c in late):.3f}s for a {late[0].deadline}s deadline (see {folder})"
    )
