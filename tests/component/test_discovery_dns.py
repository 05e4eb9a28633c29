"""Discovery and registration against real DNS servers: BIND 9 and the embedded registry.

Every test runs against both (the `server` fixture is parametrized), with short
TTL floors and backoffs from config so the whole file takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.config import Config, parse_config
from sidecar.discovery import Discovery, DnsClient, Registrar, RegistrationError
from sidecar.discovery.answer import build_endpoints
from sidecar.discovery.metrics import DiscoveryMetrics
from sidecar.discovery.resolver import parse_nameservers
from sidecar.endpoint import Endpoint
from tests.dns_servers import (
    KEY_NAME,
    KEY_SECRET,
    ROOT,
    ProcessDnsServer,
    RegistryProcess,
    Srv,
    make_server,
)

pytestmark = pytest.mark.timeout(60)
NAME = "_pl._grpc.lon3.example.net."


@pytest.fixture(params=["bind", "registry"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessDnsServer]:
    s = make_server(request.param, tmp_path / request.param)
    try:
        yield s
    finally:
        s.stop()


def discovery_config(ns: str, **overrides: Any) -> Config:
    discovery = {
        "nameservers": [ns],
        "ttl_floor_s": 0.2,
        "jitter": 0.0,
        "timeout_s": 0.5,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.3,
        "empty_grace_s": 30.0,
        **overrides,
    }
    return parse_config({"site": "lon3", "discovery": discovery, "upstreams": {"pl": {}}})


class Updates:
    """Records on_update calls; lets a test wait for the next one that matches."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[Endpoint], bool]] = []
        self._changed = asyncio.Event()
        self._cursor = 0  # calls before this were consumed by an earlier wait

    def __call__(self, upstream: str, site: str, endpoints: list[Endpoint], stale: bool) -> None:
        assert (upstream, site) == ("pl", "lon3")
        self.calls.append((time.monotonic(), endpoints, stale))
        self._changed.set()

    async def wait(
        self, pred: Callable[[list[Endpoint], bool], bool], within_s: float = 10.0
    ) -> tuple[float, list[Endpoint], bool]:
        async with asyncio.timeout(within_s):
            while True:
                while self._cursor < len(self.calls):
                    call = self.calls[self._cursor]
                    self._cursor += 1
                    if pred(call[1], call[2]):
                        return call
                self._changed.clear()
                await self._changed.wait()


REGISTRY = CollectorRegistry()  # where these tests' lookups and watches count
METRICS = DiscoveryMetrics(REGISTRY)


async def lookup(server: ProcessDnsServer, name: str = NAME) -> list[Endpoint]:
    client = DnsClient(parse_nameservers([server.nameserver]), timeout_s=1.0, metrics=METRICS)
    answer = await client.lookup_srv(name)
    return build_endpoints(answer.records, answer.addresses, "lon3")


async def poll(check: Callable[[], Awaitable[object]], within_s: float) -> None:
    """Wait until `check()` returns something truthy (DNS offers no change events)."""
    async with asyncio.timeout(within_s):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def gone(server: ProcessDnsServer) -> bool:
    return not await lookup(server)


RECORDS = [
    Srv(10, 60, 8001, "a.lon3.example.net.", "127.0.0.11"),
    Srv(10, 0, 8002, "b.lon3.example.net.", "127.0.0.12"),
    Srv(20, 5, 8003, "c.lon3.example.net.", "127.0.0.13"),
]
EXPECTED = [
    Endpoint("127.0.0.11", 8001, "lon3", 10, 60, "a.lon3.example.net"),
    Endpoint("127.0.0.12", 8002, "lon3", 10, 0, "b.lon3.example.net"),
    Endpoint("127.0.0.13", 8003, "lon3", 20, 5, "c.lon3.example.net"),
]


async def test_priorities_weights_ports_and_targets_come_through(server: ProcessDnsServer) -> None:
    """Every SRV field (weight 0 included) reaches the endpoints; target '.' means none."""
    server.set_srv(NAME, RECORDS)
    assert await lookup(server) == EXPECTED
    server.set_srv("_gone._grpc.lon3.example.net.", [Srv(0, 0, 0, ".")])
    client = DnsClient(parse_nameservers([server.nameserver]))
    assert (await client.lookup_srv("_gone._grpc.lon3.example.net.")).kind == "unavailable"


async def test_targets_missing_from_additional_are_looked_up(tmp_path: Path) -> None:
    """With minimal responses (no additional section) targets get their own A lookups."""
    for kind in ("bind", "registry"):
        s = make_server(kind, tmp_path / kind, minimal_responses=True)
        try:
            s.set_srv(NAME, RECORDS)
            assert not s.query(NAME).additional
            assert await lookup(s) == EXPECTED
        finally:
            s.stop()


async def test_tcp_fallback_for_220_records(server: ProcessDnsServer) -> None:
    """220 records do not fit UDP: the truncated answer is fetched again over TCP."""
    records = [Srv(1, 1, 9000 + i, f"h{i}.lon3.example.net.", f"127.0.1.{i}") for i in range(220)]
    server.set_srv(NAME, records)
    before = REGISTRY.get_sample_value("sidecar_dns_tcp_fallbacks_total") or 0.0
    endpoints = await lookup(server)
    assert len(endpoints) == 220
    assert {ep.port for ep in endpoints} == set(range(9000, 9220))
    assert (REGISTRY.get_sample_value("sidecar_dns_tcp_fallbacks_total") or 0) > before


async def test_ttl_refresh_is_seen_without_restart(server: ProcessDnsServer) -> None:
    """A changed record set reaches on_update after the (short) TTL, no restart."""
    server.set_srv(NAME, RECORDS[:1], ttl=1)
    updates = Updates()
    disc = Discovery(discovery_config(server.nameserver), updates)
    await disc.start()
    try:
        await updates.wait(lambda eps, stale: eps == EXPECTED[:1])
        server.set_srv(NAME, RECORDS, ttl=1)
        await updates.wait(lambda eps, stale: eps == EXPECTED and not stale, within_s=5)
        assert disc.snapshot()[0]["last_error"] is None
    finally:
        await disc.stop()


async def test_stale_on_error_with_server_killed_and_restarted(server: ProcessDnsServer) -> None:
    """Server down: last good set kept and marked stale; back up: fresh again, same set."""
    # TTL 30 so the registry's leases outlive the restart; the cap keeps refreshes quick.
    server.set_srv(NAME, RECORDS, ttl=30)
    updates = Updates()
    disc = Discovery(discovery_config(server.nameserver, ttl_cap_s=0.3), updates, metrics=METRICS)
    await disc.start()
    try:
        await updates.wait(lambda eps, stale: eps == EXPECTED and not stale)
        server.stop()
        await updates.wait(lambda eps, stale: stale, within_s=5)
        assert (
            REGISTRY.get_sample_value("sidecar_dns_stale", {"upstream": "pl", "site": "lon3"}) == 1
        )
        snap = disc.snapshot()[0]
        assert snap["stale"] and snap["last_error"] and len(snap["endpoints"]) == 3
        server.start()  # same port; BIND's .jnl / the registry's journal keep the records
        await updates.wait(lambda eps, stale: eps == EXPECTED and not stale, within_s=5)
        assert (
            REGISTRY.get_sample_value("sidecar_dns_stale", {"upstream": "pl", "site": "lon3"}) == 0
        )
        assert all(eps for _, eps, _ in updates.calls)  # never an empty set
    finally:
        await disc.stop()


async def test_nxdomain_is_believed_only_after_grace(server: ProcessDnsServer) -> None:
    """Deleting the name marks the set stale at once and empties it only after the grace."""
    server.set_srv(NAME, RECORDS, ttl=1)
    updates = Updates()
    disc = Discovery(discovery_config(server.nameserver, empty_grace_s=1.5), updates)
    await disc.start()
    try:
        await updates.wait(lambda eps, stale: eps == EXPECTED)
        deleted_at = time.monotonic()
        server.delete_name(NAME)
        await updates.wait(lambda eps, stale: eps == EXPECTED and stale, within_s=5)
        emptied_at, _, stale = await updates.wait(lambda eps, stale: not eps, within_s=8)
        assert not stale
        assert emptied_at - deleted_at >= 1.5
    finally:
        await disc.stop()


def registration_config(
    server: ProcessDnsServer, secret: str | None = KEY_SECRET, ttl_s: int = 3
) -> Config:
    reg: dict[str, Any] = {
        "nameserver": server.nameserver,
        "ttl_s": ttl_s,
        "check_interval_s": 0.05,
    }
    if secret is not None:
        reg["tsig"] = {"name": KEY_NAME, "secret": secret}
    return parse_config(
        {
            "service": "pl",
            "site": "lon3",
            "inbound": {"listen": "127.0.0.1:18181"},
            "registration": reg,
        }
    )


MINE = [Endpoint("127.0.0.1", 18181, "lon3", 10, 100, "pl-lon3-18181.lon3.example.net")]


async def test_register_resolve_deregister_round_trip(server: ProcessDnsServer) -> None:
    """register() publishes SRV + A that discovery resolves; deregister() removes them."""
    registrar = Registrar(registration_config(server))
    await registrar.register()
    assert await lookup(server) == MINE
    await registrar.deregister()
    assert await lookup(server) == []
    assert server.query("pl-lon3-18181.lon3.example.net.", "A").answer == []


async def test_run_registers_when_healthy_and_removes_on_stop(server: ProcessDnsServer) -> None:
    """Nothing is published while the app is unhealthy; stop() takes the record down."""
    healthy = False
    registrar = Registrar(registration_config(server))
    registrar.start(lambda: healthy)
    try:
        await asyncio.sleep(0.3)
        assert await lookup(server) == []
        healthy = True
        await poll(lambda: lookup(server), within_s=5)
        assert await lookup(server) == MINE
    finally:
        await registrar.stop()
    assert await lookup(server) == []


@pytest.mark.parametrize("secret", [None, "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldA=="])
async def test_unsigned_or_wrongly_signed_updates_are_refused(
    server: ProcessDnsServer, secret: str | None
) -> None:
    """Without the key, or with a wrong secret, the server refuses and nothing appears."""
    registrar = Registrar(registration_config(server, secret))
    with pytest.raises(RegistrationError):
        await registrar.register()
    assert not registrar.registered
    assert server.srv_set(NAME) == set()


async def test_registry_expires_unrenewed_records_and_relearns_on_renewal(tmp_path: Path) -> None:
    """Embedded registry only: a record not renewed vanishes; a restarted (empty)
    registry learns the record again from the registrar's renewals."""
    s = RegistryProcess(tmp_path / "r", lease_factor=1.0)
    s.journal = None
    s.start()
    try:
        once = Registrar(registration_config(s, ttl_s=1))
        await once.register()  # ttl 1 s, lease 1 s, never renewed
        assert await lookup(s) == MINE
        await poll(lambda: gone(s), within_s=5)
        renewing = Registrar(registration_config(s, ttl_s=1))  # renews every ttl/3 s
        renewing.start(lambda: True)
        try:
            await asyncio.sleep(2)  # two leases
            assert await lookup(s) == MINE
            s.restart()  # no journal: starts empty
            await poll(lambda: lookup(s), within_s=5)
        finally:
            await renewing.stop()
    finally:
        s.stop()


@pytest.mark.parametrize("as_json", [False, True])
def test_resolve_cli_prints_endpoints_in_balancer_order(
    server: ProcessDnsServer, as_json: bool
) -> None:
    """`sidecar resolve` lists priority 10 before 20, with every field."""
    server.set_srv(NAME, RECORDS)
    cmd = [sys.executable, "-m", "sidecar", "resolve", NAME, "--nameserver", server.nameserver]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [*cmd, *(["--json"] if as_json else [])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    if as_json:
        data = json.loads(out)
        assert [e["priority"] for e in data["endpoints"]] == [10, 10, 20]
        assert {e["port"] for e in data["endpoints"]} == {8001, 8002, 8003}
    else:
        assert out.index("127.0.0.13:8003") > max(out.index("127.0.0.11"), out.index("127.0.0.12"))
