"""What every test tier needs before it can start: the generated gRPC stubs, and
Hypothesis without its per-example deadline (a timing assertion: on a busy shared
machine one example may take 250 ms for reasons that are not the code's)."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest
from hypothesis import settings

settings.register_profile("sidecar", deadline=None)
settings.load_profile("sidecar")


def pytest_configure(config: pytest.Config) -> None:
    if importlib.util.find_spec("meshtest") is None or importlib.util.find_spec("music") is None:
        pytest.exit(
            "the gRPC stubs are not generated: run `make proto` (or `make test`, which does it)",
            returncode=4,
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """At the end, what was skipped, by tier (the folder under tests/) and reason: a missing
    tool shows here once per tier, not only in the per-test list above it."""
    skipped = terminalreporter.stats.get("skipped", [])
    counts: Counter[tuple[str, str]] = Counter()
    for report in skipped:
        parts = report.nodeid.split("/")
        tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else parts[0]
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        counts[tier, reason.removeprefix("Skipped: ")] += 1
    terminalreporter.section("skipped, by tier")
    if not counts:
        terminalreporter.write_line("no test was skipped")
        return
    for (tier, reason), n in sorted(counts.items()):
        terminalreporter.write_line(f"{tier}: {n} skipped: {reason}")
