"""Discovery time and memory of `Discovery` + `Cluster` in-process. Does I/O (DNS).

`python -m bench.discovery_probe --nameserver H:P --name SRV --expect N` builds the
sidecar's own `Discovery` (sidecar/discovery/watcher.py) for one upstream with that
SRV name, feeds its updates to a `Cluster` as the composition root will, and prints
JSON: seconds from `start()` to the first update and to N hosts in the cluster, and
this process's RSS before and after (so the memory per discovered endpoint, without
any channel). Run in its own process so the RSS is this alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from sidecar.cluster import Cluster
from sidecar.config import parse_config
from sidecar.discovery import Discovery
from sidecar.endpoint import Endpoint


def _rss_kib() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def probe(nameserver: str, name: str, expect: int, timeout_s: float) -> dict[str, Any]:
    config = parse_config(
        {
            "service": "bench",
            "site": "local",
            "discovery": {"nameservers": [nameserver], "timeout_s": 5},
            "upstreams": {"echo": {"grpc_services": ["meshtest.echo.v1.Echo"], "srv_name": name}},
        }
    )
    cluster = Cluster("echo", sites=config.upstream_sites("echo"), rng=random.Random(1))
    first: list[float] = []
    full = asyncio.Event()
    counts: list[int] = []

    def on_update(upstream: str, site: str, endpoints: list[Endpoint], stale: bool) -> None:
        cluster.update(site, endpoints, time.monotonic())
        first.append(time.monotonic())
        counts.append(len(cluster.hosts))
        if len(cluster.hosts) >= expect:
            full.set()

    discovery = Discovery(config, on_update, rng=random.Random(1))
    gc.collect()
    rss0 = _rss_kib()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    await discovery.start()
    try:
        async with asyncio.timeout(timeout_s):
            await full.wait()
        t_full = time.monotonic() - t0
        cpu = time.process_time() - cpu0
    except TimeoutError:
        cpu = None
        t_full = None
    # One pick builds the balancer's plan, as the first real call would.
    picked = cluster.pick(time.monotonic()) is not None
    gc.collect()
    rss1 = _rss_kib()
    await discovery.stop()
    return {
        "name": name,
        "expect": expect,
        "hosts": len(cluster.hosts),
        "updates": counts,
        "first_update_s": first[0] - t0 if first else None,
        "all_endpoints_s": t_full,
        "cpu_s": cpu,  # this process's CPU from start() to all endpoints in the cluster
        "picked": picked,
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
    }


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.discovery_probe")
    p.add_argument("--nameserver", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30.0)
    a = p.parse_args()
    print(json.dumps(asyncio.run(probe(a.nameserver, a.name, a.expect, a.timeout))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
