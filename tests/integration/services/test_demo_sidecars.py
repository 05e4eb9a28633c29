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

from services import demo_prometheus
from tests.integration.services.test_demo_direct import start_demo, survivors

pytestmark = pytest.mark.timeout(180)
# Floors per phase (both sites). Measured on the shared 2-core machine with these settings
# (30 s, 20 calls/s per site, burst 4x): 100% in every phase but the overload, where
# 97.5-100% (a few `overloaded` drops), in 3 runs. The floors leave room for a busy
# machine but not for a fault that shows: the demo's callers retry on another instance
# (retries.max_attempts 2) and break circuits, so a killed, slowed or stopped instance
# must not cost more than a few calls.
FLOOR = {
    "steady": 0.99,
    "kill-metadata": 0.97,  # retries and breakers hide it
    "slow-playlist": 0.97,  # latency-aware balancing moves away
    "lon3-playlist-down": 0.97,  # lon3's view fails over to sto3's playlist
    "restored": 0.97,
    # the regular load beside the burst shares lon3's access point, whose sidecar sheds
    # both alike, so this ratio tracks the machine's spare capacity: 93.9-100% measured on
    # a quiet machine, 65-80% with other suites running at once. The property that matters
    # is checked below: every failure in the phase is a sidecar drop, never an app error.
    "overload": 0.5,
    "cooldown": 0.95,
}
# The burst itself: every call ends OK or dropped by a sidecar (never a hang or an app
# error), and request dropping keeps the served calls' latency bounded well under the
# 1,000 ms deadline (worst second's p99 measured 47-274 ms).
BURST_P99_MS = 750.0
BURST_ERRORS = {"overloaded", "deadline"}


async def test_demo_with_sidecars_survives_the_story(tmp_path: Path) -> None:
    """Sidecar mode: the walk works in both sites, each fault is survived, exit 0, no orphans."""
    demo_id = uuid.uuid4().hex
    summary = tmp_path / "summary.json"
    proc = await start_demo(
        tmp_path, demo_id, "--duration", "30", "--burst-factor", "4", "--summary-out", str(summary)
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 170)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    result = json.loads(summary.read_text())
    assert result["mode"] == "sidecars"
    # mTLS between every sidecar, its certificates re-issued while the story ran
    assert result["mtls"]["rounds"] >= 1, result["mtls"]
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
    # During the burst every failure in lon3 is a drop by a sidecar, never an app error
    assert set(rows[("overload", "lon3")]["errors"]) <= BURST_ERRORS, rows[("overload", "lon3")]
    # The overload burst ran: its calls are either served or dropped, never stuck, and
    # the served ones stay fast.
    burst = rows[("overload", "burst-lon3")]
    assert burst["count"] > 0
    assert set(burst["errors"]) <= BURST_ERRORS, burst
    assert burst["success_ratio"] >= 0.5, burst
    assert burst["worst_p99_ms"] < BURST_P99_MS, burst
    assert b"summary per phase and site" in out
    assert b"per instance" in out
    if demo_prometheus.binary() is not None:  # it scraped every sidecar; printed its URL
        assert result["prometheus"].startswith("http://127.0.0.1:")
        assert f"Prometheus: {result['prometheus']}" in text
    assert survivors(demo_id) == []  # Prometheus too
