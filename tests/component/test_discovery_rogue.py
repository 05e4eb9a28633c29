"""A rogue DNS server never crashes discovery nor empties a good endpoint set."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from sidecar.config import parse_config
from sidecar.discovery import Discovery
from sidecar.endpoint import Endpoint
from tests.dns_servers import ROGUE_MODES, RogueDns, Srv

pytestmark = pytest.mark.timeout(30)
RECORDS = [Srv(10, 5, 8001, "a.lon3.example.net.", "127.0.0.11")]
GOOD = [Endpoint("127.0.0.11", 8001, "lon3", 10, 5, "a.lon3.example.net")]


async def poll(check: Callable[[], bool], within_s: float) -> None:
    """Wait until `check()` holds (the rogue server has no events to offer)."""
    async with asyncio.timeout(within_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


@pytest.fixture
async def rogue() -> AsyncIterator[RogueDns]:
    server = RogueDns(RECORDS, ttl=0)
    await server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("mode", [m for m in ROGUE_MODES if m != "good"])
async def test_bad_answers_keep_the_last_good_set(rogue: RogueDns, mode: str) -> None:
    """Each kind of bad answer is a failure: the set stays (stale), the loop lives on,
    and a good answer afterwards clears the stale flag."""
    config = parse_config(
        {
            "site": "lon3",
            "discovery": {
                "nameservers": [rogue.nameserver],
                "ttl_floor_s": 0.05,
                "timeout_s": 0.2,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.1,
                "empty_grace_s": 0,  # even a believed-at-once empty must not come from garbage
            },
            "upstreams": {"pl": {}},
        }
    )
    calls: list[tuple[list[Endpoint], bool]] = []
    disc = Discovery(config, lambda u, s, eps, stale: calls.append((eps, stale)))
    await disc.start()
    try:
        await poll(lambda: bool(calls), within_s=5)
        assert calls == [(GOOD, False)]
        rogue.mode = mode
        await poll(lambda: disc.snapshot()[0]["failures"] >= 3, within_s=10)
        snap = disc.snapshot()[0]
        assert snap["stale"] and snap["endpoints"] == ["127.0.0.11:8001"], snap
        assert all(eps == GOOD for eps, _ in calls)
        assert all(not t.done() for t in disc._tasks)
        rogue.mode = "good"
        await poll(lambda: calls[-1] == (GOOD, False), within_s=5)
    finally:
        await disc.stop()
