"""`sidecar xds`: serve a config's upstreams over ADS until SIGINT/SIGTERM.

Does I/O. Endpoints come from SRV discovery (or static `endpoints`), health from the
upstreams' active health checks (sidecar/xds/feed.py).
"""

from __future__ import annotations

import asyncio
import signal

from sidecar.config import Config
from sidecar.xds.feed import XdsHost


async def serve(config: Config, listen: str | None) -> int:
    xds = config.xds
    host = XdsHost(
        config,
        listen or (xds.listen if xds is not None else "127.0.0.1:18000"),
        xds.refresh_s if xds is not None else 1.0,
    )
    port = await host.start()
    print(f"sidecar xds: serving {len(config.upstreams)} upstreams on port {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await host.stop()
    return 0
