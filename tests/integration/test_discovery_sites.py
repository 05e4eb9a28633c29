"""Discovery and registration wired into real sidecars: two sites, failover and back.

Real processes only: a DNS server (the embedded registry, and BIND 9 for the join and
leave test), `services.echo` backends each behind an inbound sidecar that registers
itself by RFC 2136, and one caller sidecar in lon3 that discovers `echo` per site.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dns_servers import ProcessDnsServer, make_server
from tests.integration.procs import wait_until
from tests.integration.sites import Caller, Instance, drive, ratio, share

pytestmark = pytest.mark.timeout(120)
# What a user configures for a failover that callers should not notice: retries on
# another endpoint (another site once the local one is used up), breakers, and active
# health checks (which, unlike breakers, are not held back by max_ejection_percent).
RETRIES = {"max_attempts": 3, "on": ["UNAVAILABLE"], "backoff_base_ms": 5}
BREAKER = {"fail_max": 3, "reset_timeout_s": 2.0}
HEALTH_CHECK = {"interval_s": 0.3, "timeout_s": 0.3, "unhealthy_threshold": 2}


@pytest.fixture(params=["registry", "bind"])
def dns(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessDnsServer]:
    server = make_server(request.param, tmp_path / request.param)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ProcessDnsServer]:
    server = make_server("registry", tmp_path / "registry")
    try:
        yield server
    finally:
        server.stop()


def start_all(instances: list[Instance]) -> None:
    for inst in instances:
        inst.start()
    for inst in instances:
        inst.wait_registered()


async def test_new_instance_gets_traffic_and_deregistered_one_stops(
    dns: ProcessDnsServer, tmp_path: Path
) -> None:
    """Without restarting the caller: a newly registered instance starts receiving calls;
    after POST /drain it is deregistered and stops receiving them while still listening."""
    first = Instance("lon3-a", "lon3", tmp_path, dns, {"linger_s": 30})
    second = Instance("lon3-b", "lon3", tmp_path, dns, {"linger_s": 30})
    caller = None
    try:
        start_all([first])
        # least_request: with peak EWMA two equally fast instances at low concurrency
        # split by tiny EWMA differences (measured 4% to 100% for the newcomer), which
        # is the balancer working, not discovery; least_request splits them ~50/50.
        caller = Caller(tmp_path, dns, breaker=BREAKER, lb="least_request")
        wait_until(lambda: caller.endpoints() == {first.address}, 15, "caller sees lon3-a")
        before = await drive(caller.address, 1.0, 50)
        assert ratio(before) == 1.0
        assert share(before, "lon3-a") == 1.0

        start_all([second])
        wait_until(lambda: second.address in caller.endpoints(), 15, "caller sees lon3-b")
        joined = await drive(caller.address, 2.0, 50)
        assert ratio(joined) == 1.0
        assert share(joined, "lon3-b") > 0.2, "it takes a share (~50% expected)"

        status_before = second.sidecar.popen.poll() if second.sidecar else None
        from tests.integration.procs import http

        assert http("POST", f"http://127.0.0.1:{second.admin}/drain")[0] == 200
        wait_until(lambda: second.address not in caller.endpoints(), 15, "lon3-b dropped")
        left = await drive(caller.address, 1.5, 50)
        assert ratio(left) == 1.0
        assert share(left, "lon3-b") == 0.0
        # It was deregistered, not killed: still running, still within its linger.
        assert status_before is None and second.sidecar and second.sidecar.popen.poll() is None
        discovery = caller.clusters()["echo"]["discovery"]
        assert {d["site"] for d in discovery} == {"lon3", "sto3"}
        assert all(d["stale"] is False for d in discovery)
    finally:
        for inst in (first, second):
            inst.stop()
        if caller is not None:
            caller.stop()


async def test_site_failover_and_back(registry: ProcessDnsServer, tmp_path: Path) -> None:
    """lon3's instances stopped (SIGTERM, then SIGKILL): traffic moves to sto3 with a
    success ratio >= 99%, and comes back to lon3 when they return."""
    lon3 = [Instance(f"lon3-{i}", "lon3", tmp_path, registry, {"linger_s": 3.5}) for i in "abc"]
    sto3 = [Instance(f"sto3-{i}", "sto3", tmp_path, registry) for i in "ab"]
    caller = None
    report: dict[str, object] = {}
    try:
        start_all(lon3 + sto3)
        caller = Caller(
            tmp_path, registry, retries=RETRIES, breaker=BREAKER, health_check=HEALTH_CHECK
        )
        want = {i.address for i in lon3 + sto3}
        wait_until(lambda: caller.endpoints() == want, 20, "caller sees both sites")

        steady = await drive(caller.address, 2.0)
        assert ratio(steady) == 1.0
        assert share(steady, "lon3") >= 0.95, "the local site takes the traffic"

        # -- SIGTERM: each sidecar deregisters, lingers, closes; then its app stops.
        load = asyncio.create_task(drive(caller.address, 9.0))
        await asyncio.sleep(1.0)
        for inst in lon3:
            inst.sigterm()
        codes = await asyncio.gather(*(asyncio.to_thread(i.wait_stopped) for i in lon3))
        assert codes == [0, 0, 0]
        moved = await load
        report["sigterm_ratio"] = ratio(moved)
        tail = [r for r in moved if r.t >= 7.0]
        assert share(tail, "sto3") == 1.0, "after the failover sto3 serves everything"
        assert ratio(moved) >= 0.99, report

        # -- back: lon3 returns, registers, and takes its traffic back.
        start_all(lon3)
        wait_until(lambda: caller.endpoints() == {i.address for i in lon3 + sto3}, 20, "lon3")
        back = await drive(caller.address, 2.0)
        assert ratio(back) == 1.0
        assert share(back, "lon3") >= 0.95

        # -- SIGKILL: no deregistration; the caller's retries, breakers and health
        # checks hide the dead instances until their records expire in the registry.
        load = asyncio.create_task(drive(caller.address, 8.0))
        await asyncio.sleep(1.0)
        t_kill = time.monotonic()
        for inst in lon3:
            inst.sigkill()
        killed = await load
        report["sigkill_ratio"] = ratio(killed)
        report["sigkill_errors"] = sorted({r.code for r in killed if r.code != "OK"})
        wait_until(lambda: caller.endpoints() == {i.address for i in sto3}, 20, "expired records")
        report["sigkill_gone_after_s"] = round(time.monotonic() - t_kill, 1)
        report["retries"] = [
            line
            for line in caller.metrics().splitlines()
            if line.startswith("sidecar_retries_total")
        ]
        print("failover report:", report)
        assert ratio(killed) >= 0.99, report
        assert share(killed[-80:], "sto3") == 1.0
    finally:
        for inst in lon3 + sto3:
            inst.stop()
        if caller is not None:
            caller.stop()
