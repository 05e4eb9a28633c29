"""Fixtures for the chaos scenarios: the mesh (with namespaces when root), cleanup, results.

Every scenario gets a fresh `Mesh` (BIND 9 + what the scenario adds). After the
test, pass or fail, every process is killed, the namespaces and the bridge are
deleted, and the test fails if any process or link of the run survived. The
results folders written during the session are listed at the end of the run, so
CI logs show where the timelines and plots are.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import netns
from tests.chaos.harness import Mesh, leaked, wait_until

_RESULTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _RESULTS:
        terminalreporter.section("chaos results")
        for line in _RESULTS:
            terminalreporter.write_line(line)


def record_result(folder: Path, summary: dict[str, object]) -> None:
    """List a scenario's results folder and headline numbers in the session summary."""
    keys = ("success_ratio", "count", "p99_ms", "max_ms", "status", "sidecar_errors")
    head = " ".join(f"{k}={summary.get(k)}" for k in keys)
    _RESULTS.append(f"{folder}: {head}")
    print(f"\nchaos results: {folder}\n  {head}")


@pytest.fixture(scope="session")
def netns_status() -> tuple[bool, str]:
    ok, reason = netns.available()
    if ok:
        netns.sweep_stale()
    return ok, reason


@pytest.fixture
def network(netns_status: tuple[bool, str]) -> Iterator[netns.Network | None]:
    """A bridge for this test's namespaces, or None (loopback) when namespaces are unusable."""
    ok, _ = netns_status
    if not ok:
        yield None
        return
    net = netns.Network()
    try:
        net.open()
        yield net
    finally:
        net.close()
        left = net.leftovers()
        assert not left, f"namespaces/links left behind: {left}"


@pytest.fixture
def need_netns(netns_status: tuple[bool, str]) -> None:
    ok, reason = netns_status
    if not ok:
        pytest.skip(f"needs network namespaces: {reason}")


@pytest.fixture
def mesh(tmp_path: Path, network: netns.Network | None) -> Iterator[Mesh]:
    m = Mesh(tmp_path / "mesh", network)
    try:
        yield m
    finally:
        m.close()
        try:
            wait_until(lambda: not leaked(), 5, "every process of the run to exit")
        except TimeoutError:
            pytest.fail(f"processes leaked: {leaked()}")
