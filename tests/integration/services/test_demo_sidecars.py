"""The demo for real: embedded registry, sidecars that register and discover, both sites.

Runs `services.demo` non-interactively for a short time and checks its summary: the
request walk reaches all three layers in both sites, every scripted phase had traffic,
and the success ratio the summary reports for each fault is at least a tolerant bound
(the real numbers are printed; see the README's Demo section).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from tests.integration.services.test_demo_direct import start_demo, survivors

pytestmark = pytest.mark.timeout(180)
# Tolerant floors: the 2-core machine is shared, and retries are not plugged into
# `sidecar run` yet, so a killed instance can cost a few calls before its sidecar
# deregisters it and the callers' breakers open.
FLOOR = {
    "steady": 0.97,
    "kill-metadata": 0.90,
    "slow-playlist": 0.90,
    "lon3-playlist-down": 0.90,
    "restored": 0.90,
}
# Not floored: "overload" and "cooldown". Request dropping (inbound admission) is not
# plugged into `sidecar run` yet, so on a busy 2-core machine a burst builds queues whose
# tail runs into the short cooldown (measured from 100% down to 12% there). The burst is
# kept small here; its numbers are printed, not asserted.


async def test_demo_with_sidecars_survives_the_story(tmp_path: Path) -> None:
    """Sidecar mode: the walk works in both sites, each fault is survived, exit 0, no orphans."""
    demo_id = uuid.uuid4().hex
    summary = tmp_path / "summary.json"
    proc = await start_demo(
        tmp_path, demo_id, "--duration", "30", "--burst-factor", "2", "--summary-out", str(summary)
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 170)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    result = json.loads(summary.read_text())
    assert result["mode"] == "sidecars"
    # sto3's view calls its peers with the in-process client; lon3's through its sidecar
    assert result["inprocess"] == ["playlistview-sto3-0"]
    print(text[-6000:])
    # The walk: perimeter -> view -> data, served through the sidecars in each site.
    for site in ("lon3", "sto3"):
        walk = result["walk"][site]
        for service in ("accesspoint", "playlistview", "playlist", "metadata", "search"):
            assert walk.get(service, 0) > 0, (site, service, walk)
    rows = {(r["phase"], r["site"]): r for r in result["phases"]}
    for (phase, site), row in rows.items():
        if site == "burst-lon3":
            continue
        assert row["count"] > 0, (phase, site)
        floor = FLOOR.get(phase)
        if floor is not None:
            assert row["success_ratio"] >= floor, (phase, site, row)
    # The overload burst ran: its calls are either served or dropped, never stuck.
    assert ("overload", "burst-lon3") in rows
    assert rows[("overload", "burst-lon3")]["count"] > 0
    assert b"summary per phase and site" in out
    assert b"per instance" in out
    assert survivors(demo_id) == []
